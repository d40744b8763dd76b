/**
 * Number formats for GGUF export: IEEE half precision (F16), bfloat16 input, and ggml's Q8_0 blocks.
 *
 * Rounding follows ggml's reference code (and numpy, which gguf-py uses): float32 → float16 rounds to
 * nearest, ties to even; Q8_0 computes in float32 (`d = amax / 127`, `q = roundf(x * (1 / d))`, ties away
 * from zero) and stores d as float16, so the bytes match llama.cpp's own converter.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bit pattern nearest to `v` (ties to even; overflow → ±Inf; NaN stays NaN). */
export function f32ToF16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // A float16 subnormal (or zero): value / 2^-24, rounded.
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    let half = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, which is the right rounding (up to Inf).
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  return sign | half;
}

let F16_TABLE: Float32Array | null = null;

/** float16 bits → float32 value, for all 65536 patterns. */
function f16Table(): Float32Array {
  if (F16_TABLE) return F16_TABLE;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) t[h] = mant === 0 ? sign * Infinity : NaN;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  F16_TABLE = t;
  return t;
}

export function f16BitsToF32(h: number): number {
  return f16Table()[h & 0xffff]!;
}

/** Raw little-endian F16 values → float32. */
export function f16ToF32Array(src: Uint8Array, out: Float32Array = new Float32Array(src.length / 2)): Float32Array {
  const table = f16Table();
  const n = src.length >>> 1;
  for (let i = 0; i < n; i++) out[i] = table[src[2 * i]! | (src[2 * i + 1]! << 8)]!;
  return out;
}

/** Raw little-endian BF16 values → float32 (exact: bfloat16 is float32's top half). */
export function bf16ToF32Array(src: Uint8Array, out: Float32Array = new Float32Array(src.length / 2)): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  const n = src.length >>> 1;
  for (let i = 0; i < n; i++) bits[i] = ((src[2 * i]! << 16) | (src[2 * i + 1]! << 24)) >>> 0;
  return out;
}

/** Raw little-endian F32 values → float32 (a copy, aligned). */
export function f32FromBytes(src: Uint8Array, out: Float32Array = new Float32Array(src.length / 4)): Float32Array {
  new Uint8Array(out.buffer, out.byteOffset, src.length).set(src);
  if (!LITTLE_ENDIAN) {
    const v = new DataView(src.buffer, src.byteOffset, src.length);
    for (let i = 0; i < out.length; i++) out[i] = v.getFloat32(4 * i, true);
  }
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** float32 values → GGUF F32 bytes (little-endian). */
export function toF32Bytes(x: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  const out = new Uint8Array(x.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < x.length; i++) v.setFloat32(4 * i, x[i]!, true);
  return out;
}

/** float32 values → GGUF F16 bytes. */
export function toF16Bytes(x: Float32Array): Uint8Array {
  const out = new Uint8Array(x.length * 2);
  for (let i = 0; i < x.length; i++) {
    const h = f32ToF16Bits(x[i]!);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

export const Q8_0_BLOCK = 32;
/** Bytes per Q8_0 block: a float16 scale and 32 int8 values. */
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

/** C's roundf: to nearest, ties away from zero (exact for float32 inputs in float64 arithmetic). */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/**
 * float32 values (a whole number of rows whose length is a multiple of 32) → GGUF Q8_0 bytes: each block of
 * 32 values is `d = max|x| / 127` as float16, then `round(x / d)` as int8.
 */
export function toQ8_0Bytes(x: Float32Array): Uint8Array {
  if (x.length % Q8_0_BLOCK !== 0) throw new Error(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values, got ${x.length}`);
  const blocks = x.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
  for (let b = 0; b < blocks; b++) {
    const base = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(x[base + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = b * Q8_0_BLOCK_BYTES;
    const h = f32ToF16Bits(d);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < Q8_0_BLOCK; j++) out[o + 2 + j] = roundf(Math.fround(x[base + j]! * id)) & 0xff;
  }
  return out;
}

export type GgmlOutType = 'F32' | 'F16' | 'Q8_0';

/** float32 values → bytes of the given ggml type. */
export function encodeAs(type: GgmlOutType, x: Float32Array): Uint8Array {
  return type === 'F32' ? toF32Bytes(x) : type === 'F16' ? toF16Bytes(x) : toQ8_0Bytes(x);
}
