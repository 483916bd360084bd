/**
 * Writes log-softmax(logits) of `n` rows of `numClasses` into `out` at row offset `outRow`,
 * accumulating in float64 so that confident rows keep their small log-probabilities.
 */
export function logSoftmaxRows(logits: Float32Array, n: number, numClasses: number, out: Float32Array, outRow = 0): void {
  for (let row = 0; row < n; row += 1) {
    const base = row * numClasses;
    let max = -Infinity;
    for (let c = 0; c < numClasses; c += 1) max = Math.max(max, logits[base + c]);

    let sum = 0;
    for (let c = 0; c < numClasses; c += 1) sum += Math.exp(logits[base + c] - max);
    const logSum = max + Math.log(sum);

    const outBase = (outRow + row) * numClasses;
    for (let c = 0; c < numClasses; c += 1) out[outBase + c] = logits[base + c] - logSum;
  }
}
