export {};
//# sourceMappingURL=work-queue.js.map