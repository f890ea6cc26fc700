// Public exports only (DESIGN section 7). Each export is documented where it is defined.
export * from './errors.js'
export { OPTIONAL_DEPENDENCIES, hasDependency, type OptionalDependency } from './optional-deps.js'
export {
  SUBPROTOCOL_V1,
  MAX_ID_LENGTH,
  parseBearer,
  parseClientFrame,
  parseInferenceBody,
  frameText,
  parametersKey,
  stableStringify,
  type Payload,
  type AckMessage,
  type ResumeQuery,
  type ResumeAnswer,
  type StatusMessage,
  type ResultMessage,
  type ServerMessage,
  type ClientEntry,
  type FrameLimits,
} from './protocol.js'
export { createServer, InferenceServer, isLoopback } from './server/server.js'
export { createWorker, InferenceWorker, type WorkerOptions } from './server/worker.js'
export type { ServerOptions, ResolvedServerOptions } from './server/options.js'
export { Tenants, parseTokenFile, dataDirSecret, type Tenant, type TenantsOptions } from './server/tenants.js'
export { ANONYMOUS_TOKEN } from './server/http-util.js'
export { groupKey, type WorkQueue, type WorkItem, type Lease, type PullOptions, type QueueStats } from './server/queue/work-queue.js'
export { MemoryWorkQueue, type ItemLength, type MemoryWorkQueueOptions } from './server/queue/memory-queue.js'
export { inputLength, type Batching } from './server/queue/length-batching.js'
export { MemoryStateBackend } from './server/state/memory-backend.js'
export { SqliteStateBackend, type SqliteStateBackendOptions } from './server/state/sqlite-backend.js'
/**
 * The shared state of several processes on one Redis (ioredis, an optional peer dependency loaded
 * on first use): `new RedisStateBackend({ url, prefix?, maxRetained, retentionMs, maxRetainedBytes? })`.
 * One Lua script per transition; the queue on Redis Streams consumer groups; see docs/api.md.
 */
export { RedisStateBackend, DEFAULT_REDIS_PREFIX, type RedisStateBackendOptions } from './server/state/redis-backend.js'
export type { StateBackend, SubmitItem, SubmitOutcome, StateLease, LeasedItem, ItemResult, Routed, Route, LedgerEntry, StateStats } from './server/state/state-backend.js'
export { ownerKey, httpOwnerKey, type ResultStore, type OwnerCounts, type IdState } from './server/store/result-store.js'
export { MemoryResultStore, type MemoryResultStoreOptions } from './server/store/memory-result-store.js'
export { resolvePipeline, type Pipeline, type RunOptions, type ModelRegistry, type Parameters, type ModelLoadState, type Compute } from './models/pipeline.js'
export { createModelRegistry, catalogueOf, BUILTIN_MODEL_IDS, type ModelRegistryOptions, type TransformersOptions } from './models/registry.js'
export { TransformersPipeline, gpuAvailable, type TransformersPipelineOptions } from './models/transformers-pipeline.js'
export { TRANSFORMERS_TASKS, type TransformersTask } from './models/model-files.js'
export {
  UPSTREAM_BATCH_ITEMS,
  UPSTREAM_BATCH_TASKS,
  UpstreamPipeline,
  parseUpstreamSpec,
  type UpstreamPipelineOptions,
  type UpstreamSpec,
} from './models/upstream-pipeline.js'
export { readAudioInput, decodeAudio, resample, StreamResampler, toMono, type ReadAudioInputOptions, type DecodeAudioOptions } from './models/audio.js'
export { InferenceStream, type InferenceResult, type InferenceStreamStats } from './client/inference-stream.js'
export { infer } from './client/infer.js'
export { defaultInput, streamUrlOf, type InferenceStreamOptions, type RecordPayload } from './client/options.js'
export { ReorderBuffer } from './client/reorder-buffer.js'
export { backoffDelay, RECONNECT_DEFAULTS, type ReconnectOptions } from './client/backoff.js'
export { LatencyStats } from './client/latency-stats.js'
export { CheckpointJournal, inputHash, type JournalHeader, type JournalOptions } from './client/checkpoint-journal.js'
export { acquireCheckpointLock, type CheckpointLock } from './client/checkpoint-lock.js'
export type { CheckpointOptions } from './client/options.js'
export { readRecords, type ReadRecordsOptions } from './io/read-records.js'
export { readCsv, type CsvReadOptions } from './io/read-csv.js'
export { readJsonl, type JsonlReadOptions } from './io/read-jsonl.js'
export { readJson, type JsonReadOptions } from './io/read-json.js'
export { readParquet, parquetColumns, type ParquetReadOptions } from './io/read-parquet.js'
export { RecordReader, type ReaderOptions } from './io/record-reader.js'
export { writeRecords, type WriteRecordsOptions } from './io/write-records.js'
export { writeParquet, type ParquetWriteOptions } from './io/write-parquet.js'
export { writeCsv, type CsvWriteOptions } from './io/write-csv.js'
export { writeJsonl, type JsonlWriteOptions } from './io/write-jsonl.js'
export { RecordWriter, type WriterOptions } from './io/record-writer.js'
export type { ColumnType } from './io/output-columns.js'
export { inputFromColumn, flattenOutputs, detectTask, TASK_COLUMNS, type InputFromColumnOptions, type FlattenTask } from './io/mapping.js'
export { countRows } from './io/count-rows.js'
export { formatOf, RECORD_FORMATS, type RecordFormat } from './io/formats.js'
export { DatasetBulk, type DatasetBulkOptions, type BulkRow } from './client/dataset-bulk.js'
export { BulkClient, type BulkClientOptions, type BulkJobRequest, type BulkJobStatus, type BulkJobState, type WaitOptions } from './client/bulk-client.js'
export { OutputDatasets, type CommitFile, type CommitOptions, type CommitsPage, type DatasetInfo, type TreeOptions } from './server/datasets/output-datasets.js'
export type { LastCommit, TreeEntry, TreePage } from './server/datasets/dataset-tree.js'
export { InputDatasets, type ResolvedDataset } from './server/datasets/input-datasets.js'
export { JobStore, type JobRecord } from './server/store/job-store.js'
