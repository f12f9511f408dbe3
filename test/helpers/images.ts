/** Small synthetic test images (PNG, base64), distinct per seed. */
import sharp from 'sharp';

/** A width x height PNG with a gradient and a band that depends on `seed`. */
export async function syntheticPng(width: number, height: number, seed = 0): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const offset = 3 * (y * width + x);
      pixels[offset] = (x * 255) / width;
      pixels[offset + 1] = (y * 255) / height;
      pixels[offset + 2] = (x + seed * 7) % width > width / 3 ? 220 : (seed * 37) % 256;
    }
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

export async function syntheticPngBase64(width: number, height: number, seed = 0): Promise<string> {
  return (await syntheticPng(width, height, seed)).toString('base64');
}
