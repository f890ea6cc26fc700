/**
 * The model contract. A pipeline runs one *batch* of items that share a model and parameters:
 * one call per batch is what makes batching pay.
 */
export {};
//# sourceMappingURL=pipeline.js.map