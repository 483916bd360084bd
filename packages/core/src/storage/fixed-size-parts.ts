/**
 * Regroups a stream of chunks of any size into parts of exactly `partSize` bytes, except the
 * last, which contains the rest (1 to `partSize` bytes). An empty stream yields no part.
 *
 * Each part is a fresh Buffer that the consumer owns, and only one part at a time is being
 * filled. `onChunk` receives every input chunk in order, before it is copied, so a caller can
 * hash the stream without a second pass.
 */
export async function* readFixedSizeParts(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  partSize: number,
  onChunk: (chunk: Uint8Array) => void = () => undefined,
): AsyncGenerator<Buffer> {
  if (!Number.isSafeInteger(partSize) || partSize <= 0) {
    throw new RangeError(`partSize ${partSize} is invalid: it must be a positive integer number of bytes.`);
  }

  // Allocated on first use, so a stream that ends on a part boundary allocates no spare part.
  let part: Buffer | undefined;
  let filled = 0;

  for await (const chunk of source) {
    onChunk(chunk);

    let offset = 0;
    while (offset < chunk.byteLength) {
      part ??= Buffer.allocUnsafe(partSize);
      const copied = Math.min(partSize - filled, chunk.byteLength - offset);
      part.set(chunk.subarray(offset, offset + copied), filled);
      filled += copied;
      offset += copied;

      if (filled === partSize) {
        yield part;
        part = undefined;
        filled = 0;
      }
    }
  }

  if (part !== undefined && filled > 0) {
    yield part.subarray(0, filled);
  }
}
