/**
 * Per-token bookkeeping behind exactly-once processing and recovery: which ids are pending,
 * which finished results are retained (for duplicates and resume), which wait for a stream.
 */
export {};
//# sourceMappingURL=result-store.js.map