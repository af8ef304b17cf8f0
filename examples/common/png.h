// 8-bit RGB raster images for the example programs: pixels, rectangles, lines, a built-in
// 5x7 bitmap font, float-image blits, and PNG files (libpng) written atomically.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cugrad::examples {

/// One 8-bit RGB colour.
struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

namespace colors {
inline constexpr Rgb white{255, 255, 255};
inline constexpr Rgb black{0, 0, 0};
inline constexpr Rgb gray{128, 128, 128};
inline constexpr Rgb light_gray{225, 225, 225};
inline constexpr Rgb red{214, 39, 40};
inline constexpr Rgb blue{31, 119, 180};
inline constexpr Rgb green{44, 160, 44};
inline constexpr Rgb orange{255, 127, 14};
inline constexpr Rgb magenta{255, 0, 255};
}  // namespace colors

/// Width and height in pixels of the built-in font's glyph cell at scale 1: glyphs are 5x7
/// and advance by 6 pixels; lines advance by 9 pixels.
inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphHeight = 7;
inline constexpr int kGlyphAdvance = 6;
inline constexpr int kLineAdvance = 9;

/// Pixel size of `text` drawn at `scale` (the widest line; '\n' starts a new line). An empty
/// string measures 0 x 0.
int text_width(std::string_view text, int scale = 1);
int text_height(std::string_view text, int scale = 1);

/// An 8-bit RGB image, row-major, 3 bytes a pixel, top row first. Drawing is clipped to the
/// image: coordinates outside it are ignored, never an error.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;

  Image() = default;
  /// A width x height image filled with `background`. Throws cugrad::ValueError for negative
  /// sizes.
  Image(int width, int height, Rgb background = colors::white);
  /// An image over existing pixels; throws cugrad::ValueError unless rgb.size() is
  /// width * height * 3.
  Image(int width, int height, std::vector<std::uint8_t> rgb);

  bool contains(int x, int y) const { return x >= 0 && y >= 0 && x < width && y < height; }
  /// Sets one pixel; ignored outside the image.
  void set_pixel(int x, int y, Rgb c);
  /// Reads one pixel; throws cugrad::ValueError outside the image.
  Rgb get_pixel(int x, int y) const;
  /// Fills the rectangle with top-left (x, y) and size w x h (clipped).
  void fill_rect(int x, int y, int w, int h, Rgb c);
  /// Draws the 1-pixel outline of the rectangle (clipped).
  void draw_rect(int x, int y, int w, int h, Rgb c);
  /// Bresenham line from (x0, y0) to (x1, y1), both ends included (clipped).
  void draw_line(int x0, int y0, int x1, int y1, Rgb c);
  /// Draws `text` with its top-left corner at (x, y), each font pixel a scale x scale block.
  /// Lower-case letters are drawn as capitals; characters the font lacks are drawn as '?'.
  void draw_text(int x, int y, std::string_view text, Rgb c, int scale = 1);
  /// Draws a src_width x src_height grayscale float image at (x, y), each value a
  /// scale x scale block (nearest neighbour): lo and below is black, hi and above white, NaN
  /// magenta. Throws cugrad::ValueError if values.size() != src_width * src_height, scale < 1
  /// or !(lo < hi).
  void blit_gray(std::span<const float> values, int src_width, int src_height, int x, int y,
                 int scale, float lo, float hi);
  /// Like blit_gray for `channels` (1 or 3) planes stored channel-major (CHW, as tensors are).
  void blit_planes(std::span<const float> values, int channels, int src_width, int src_height,
                   int x, int y, int scale, float lo, float hi);
  /// Copies `src` with its top-left corner at (x, y) (clipped).
  void blit(const Image& src, int x, int y);
};

/// Writes `image` as an 8-bit RGB PNG. The file is written to a temporary name beside `path`
/// and renamed over it, so readers never see a partial file. Throws cugrad::Error naming the
/// path on any failure.
void write_png(const Image& image, const std::string& path);

/// Reads a PNG (any colour type and bit depth, converted to 8-bit RGB). Throws cugrad::Error
/// naming the path on failure.
Image read_png(const std::string& path);

}  // namespace cugrad::examples
