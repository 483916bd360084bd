/** Returns GFLOP/s of `flops` floating-point operations done in `milliseconds`. */
export function gflopsPerSecond(flops: number, milliseconds: number): number {
  return flops / (milliseconds * 1e6);
}
