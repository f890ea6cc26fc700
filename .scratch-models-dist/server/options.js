import { InvalidOptionError } from '../errors.js';
const defaults = {
    tokens: [],
    workers: 4,
    maxBatch: 32,
    maxWaitMs: 2,
    maxQueuedPerToken: 4096,
    maxRetained: 100_000,
    retentionMs: 15 * 60_000,
    maxFrameBytes: 8 * 1024 * 1024,
    maxItemsPerFrame: 1024,
    maxInputsBytes: 1024 * 1024,
    statusIntervalMs: 1000,
    authTimeoutMs: 10_000,
    shutdownTimeoutMs: 10_000,
};
function positiveInt(opts, name, min = 1) {
    const v = opts[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
        throw new InvalidOptionError(`Option "${name}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    }
}
/** Applies defaults and checks every option, naming the one that is wrong. */
export function resolveServerOptions(options = {}) {
    if (typeof options !== 'object' || options === null) {
        throw new InvalidOptionError('Server options must be an object');
    }
    const o = { ...defaults, ...options };
    for (const k of ['workers', 'maxBatch', 'maxQueuedPerToken', 'maxRetained', 'retentionMs', 'maxFrameBytes',
        'maxItemsPerFrame', 'maxInputsBytes', 'statusIntervalMs', 'authTimeoutMs']) {
        positiveInt(o, k);
    }
    positiveInt(o, 'maxWaitMs', 0);
    positiveInt(o, 'shutdownTimeoutMs', 0);
    if (!Array.isArray(o.tokens) || !o.tokens.every((t) => typeof t === 'string' && /^\S+$/.test(t))) {
        throw new InvalidOptionError('Option "tokens" must be an array of non-empty strings without spaces');
    }
    return o;
}
//# sourceMappingURL=options.js.map