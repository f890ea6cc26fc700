/** What a bulk job's dataset card (README.md of the output dataset) records. */
export interface CardFacts {
  bulkName: string
  jobId: string
  model: string
  compute: string
  parameters: Record<string, unknown> | undefined
  source: { name: string; config: string; split: string; column: string }
  /** Other source columns copied into the outputs. */
  keepColumns?: string[]
  rows: number
  failed: number
  shards: string[]
  startTime: number
  endTime: number
}

/**
 * The dataset card of an output dataset: YAML front matter (as the Hub reads it) with the run's
 * facts, then a short human description. Values are JSON-encoded, which YAML accepts.
 */
export function datasetCard(f: CardFacts): string {
  const seconds = Math.max(0, f.endTime - f.startTime)
  const front = [
    '---',
    `pretty_name: ${JSON.stringify(f.bulkName)}`,
    'configs:',
    `- config_name: ${JSON.stringify(f.source.config)}`,
    '  data_files:',
    `  - split: ${JSON.stringify(f.source.split)}`,
    `    path: ${JSON.stringify(`data/${f.source.split}-*.parquet`)}`,
    'inference_stream:',
    `  job_id: ${JSON.stringify(f.jobId)}`,
    `  model: ${JSON.stringify(f.model)}`,
    `  compute: ${JSON.stringify(f.compute)}`,
    `  parameters: ${JSON.stringify(f.parameters ?? {})}`,
    `  source_dataset: ${JSON.stringify(f.source.name)}`,
    `  source_config: ${JSON.stringify(f.source.config)}`,
    `  source_split: ${JSON.stringify(f.source.split)}`,
    `  source_column: ${JSON.stringify(f.source.column)}`,
    `  keep_columns: ${JSON.stringify(f.keepColumns ?? [])}`,
    `  rows: ${f.rows}`,
    `  failed: ${f.failed}`,
    `  start_time: ${f.startTime}`,
    `  end_time: ${f.endTime}`,
    `  seconds: ${seconds.toFixed(3)}`,
    '---',
  ]
  const body = [
    '',
    `# ${f.bulkName}`,
    '',
    `Outputs of \`${f.model}\` over column \`${f.source.column}\` of \`${f.source.name}\` (config \`${f.source.config}\`, split \`${f.source.split}\`), made by an inference-stream bulk job.`,
    '',
    `- rows: ${f.rows} (${f.failed} failed; their \`error\` column says why)`,
    `- parameters: \`${JSON.stringify(f.parameters ?? {})}\``,
    `- time: ${seconds.toFixed(1)} s, ${seconds > 0 ? (f.rows / seconds).toFixed(0) : '-'} rows/s`,
    `- files: ${f.shards.map((s) => `\`${s}\``).join(', ')}`,
    '',
    `Columns: \`row\` (index in the source split), the source column${f.keepColumns?.length ? `, the kept source columns (${f.keepColumns.map((c) => `\`${c}\``).join(', ')}; one named like a result column gets an \`input_\` prefix)` : ''}, \`outputs\` (the model's outputs as JSON, exactly as the Inference API returns them), \`error\` and \`error_code\` (set for a failed row), and flat columns for common tasks (\`label\`, \`score\`, ...).`,
    '',
  ]
  return `${[...front, ...body].join('\n')}`
}
