/** Fraction of predictions that differ from the labels. */
export function errorRate(predictions: Int32Array, labels: Int32Array): number {
  let wrong = 0;
  for (let i = 0; i < labels.length; i += 1) if (predictions[i] !== labels[i]) wrong += 1;
  return labels.length === 0 ? 0 : wrong / labels.length;
}

/** Accuracy per class (fraction of that class's items predicted correctly; NaN for an absent class). */
export function accuracyByClass(predictions: Int32Array, labels: Int32Array, numClasses: number): number[] {
  const correct = new Array<number>(numClasses).fill(0);
  const total = new Array<number>(numClasses).fill(0);
  for (let i = 0; i < labels.length; i += 1) {
    total[labels[i]] += 1;
    if (predictions[i] === labels[i]) correct[labels[i]] += 1;
  }
  return correct.map((count, c) => (total[c] === 0 ? Number.NaN : count / total[c]));
}

/** Index of the largest value of each row (first one on ties). */
export function argmaxRows(values: Float32Array, rows: number, columns: number): Int32Array {
  const result = new Int32Array(rows);
  for (let row = 0; row < rows; row += 1) {
    let best = 0;
    for (let c = 1; c < columns; c += 1) if (values[row * columns + c] > values[row * columns + best]) best = c;
    result[row] = best;
  }
  return result;
}
