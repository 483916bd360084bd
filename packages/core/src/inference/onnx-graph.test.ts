import { describe, expect, it } from 'vitest';

import { OnnxGraphBuilder } from './onnx-graph.js';

describe('OnnxGraphBuilder', () => {
  it('suffixes a name in use', () => {
    const builder = new OnnxGraphBuilder();

    const first = builder.uniqueName('conv2d_1');
    const second = builder.uniqueName('conv2d_1');

    expect(first).toBe('conv2d_1');
    expect(second).toBe('conv2d_1_2');
  });

  it('skips reserved names', () => {
    const builder = new OnnxGraphBuilder();
    builder.reserveName('logits');

    expect(builder.uniqueName('logits')).toBe('logits_2');
    expect(() => builder.reserveName('logits')).toThrow(/already in use/);
  });

  it('rejects a mis-sized initializer', () => {
    const builder = new OnnxGraphBuilder();

    expect(() => builder.addInitializer('kernel', [2, 3], new Float32Array(5))).toThrow(/needs 6/);
  });
});
