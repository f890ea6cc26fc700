// Public exports only (DESIGN section 7). Each export is documented where it is defined.
export * from './errors.js';
export { SUBPROTOCOL_V1, MAX_ID_LENGTH, parseBearer, parseClientFrame, frameText, parametersKey, } from './protocol.js';
export { createServer, InferenceServer, isLoopback } from './server/server.js';
export { tokenLabel } from './server/metrics.js';
export { MemoryWorkQueue } from './server/queue/memory-queue.js';
export { MemoryResultStore } from './server/store/memory-result-store.js';
export { createModelRegistry, BUILTIN_MODEL_IDS } from './models/registry.js';
//# sourceMappingURL=index.js.map