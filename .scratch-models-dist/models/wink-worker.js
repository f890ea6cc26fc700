/**
 * Worker-thread entry of the wink models (`builtin/sentiment`, `builtin/ner`). The English model is
 * loaded once per thread, when the thread starts; a {@link WorkerPool} started with this file runs
 * tasks for either model id.
 */
import winkNLP from 'wink-nlp';
import model from 'wink-eng-lite-web-model';
import { recognizeBatch, NER_MODEL_ID } from './wink-entities.js';
import { classifyBatch, SENTIMENT_MODEL_ID } from './wink-sentiment.js';
import { serveTasks } from './worker-protocol.js';
// The default pipe (sbd, negation, sentiment, pos, ner) is what both models need: negation feeds sentiment.
const nlp = winkNLP(model);
serveTasks({
    [SENTIMENT_MODEL_ID]: (inputs, parameters) => classifyBatch(nlp, inputs, parameters),
    [NER_MODEL_ID]: (inputs, parameters) => recognizeBatch(nlp, inputs, parameters),
});
//# sourceMappingURL=wink-worker.js.map