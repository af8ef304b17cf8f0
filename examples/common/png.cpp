// Image drawing, the built-in 5x7 font, and PNG reading/writing with libpng's simplified API
// (no setjmp/longjmp across C++ frames; the FILE* and png_image are released by RAII guards).
#include "examples/common/png.h"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

#include "cugrad/error.h"

namespace cugrad::examples {
namespace {

struct Glyph {
  char c;
  std::array<std::uint8_t, kGlyphHeight> rows;  // bit 4 is the leftmost column
};

// A classic 5x7 font: digits, capitals and the punctuation plots and captions need.
constexpr Glyph kFont[] = {
    {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'\\', {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {';', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'!', {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
    {'\'', {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}},
    {'"', {0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'*', {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
    {'|', {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'^', {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00}},
    {'~', {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00}},
    {'&', {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D}},
    {'@', {0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0F}},
    {'$', {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04}},
};

// Glyph for byte `c`: capitals for lower-case letters, '?' for anything the font lacks.
const Glyph& glyph_for(char c) {
  static const std::array<const Glyph*, 128> table = [] {
    std::array<const Glyph*, 128> t{};
    for (const Glyph& g : kFont) t[static_cast<unsigned char>(g.c)] = &g;
    return t;
  }();
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 'a' && u <= 'z') u = static_cast<unsigned char>(u - 'a' + 'A');
  if (u < 128 && table[u] != nullptr) return *table[u];
  return *table[static_cast<unsigned char>('?')];
}

std::uint8_t to_byte(float v, float lo, float hi) {
  const float t = (v - lo) / (hi - lo);
  if (!(t > 0.0f)) return 0;
  if (t >= 1.0f) return 255;
  return static_cast<std::uint8_t>(std::lround(t * 255.0f));
}

struct FileCloser {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Releases whatever libpng's simplified API still holds for a png_image.
struct PngImageGuard {
  png_image* image;
  ~PngImageGuard() { png_image_free(image); }
};

std::string errno_text() { return std::strerror(errno); }

}  // namespace

int text_width(std::string_view text, int scale) {
  int widest = 0;
  int chars = 0;
  for (char c : text) {
    if (c == '\n') {
      widest = std::max(widest, chars);
      chars = 0;
    } else {
      ++chars;
    }
  }
  widest = std::max(widest, chars);
  return widest == 0 ? 0 : (widest * kGlyphAdvance - (kGlyphAdvance - kGlyphWidth)) * scale;
}

int text_height(std::string_view text, int scale) {
  if (text.empty()) return 0;
  const int lines = 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  return ((lines - 1) * kLineAdvance + kGlyphHeight) * scale;
}

Image::Image(int w, int h, Rgb background) : width(w), height(h) {
  CUGRAD_CHECK(w >= 0 && h >= 0, "Image: size must not be negative, got ", w, "x", h);
  rgb.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
  for (std::size_t i = 0; i < rgb.size(); i += 3) {
    rgb[i] = background.r;
    rgb[i + 1] = background.g;
    rgb[i + 2] = background.b;
  }
}

Image::Image(int w, int h, std::vector<std::uint8_t> pixels) : width(w), height(h), rgb(std::move(pixels)) {
  CUGRAD_CHECK(w >= 0 && h >= 0, "Image: size must not be negative, got ", w, "x", h);
  CUGRAD_CHECK(rgb.size() == static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3, "Image: ",
               rgb.size(), " bytes do not make a ", w, "x", h, " RGB image (", static_cast<std::size_t>(w) * h * 3,
               " expected)");
}

void Image::set_pixel(int x, int y, Rgb c) {
  if (!contains(x, y)) return;
  const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + x) * 3;
  rgb[i] = c.r;
  rgb[i + 1] = c.g;
  rgb[i + 2] = c.b;
}

Rgb Image::get_pixel(int x, int y) const {
  CUGRAD_CHECK(contains(x, y), "Image::get_pixel: (", x, ", ", y, ") is outside the ", width, "x",
               height, " image");
  const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + x) * 3;
  return {rgb[i], rgb[i + 1], rgb[i + 2]};
}

void Image::fill_rect(int x, int y, int w, int h, Rgb c) {
  const int x0 = std::max(x, 0), y0 = std::max(y, 0);
  const int x1 = std::min<long long>(static_cast<long long>(x) + w, width);
  const int y1 = std::min<long long>(static_cast<long long>(y) + h, height);
  for (int yy = y0; yy < y1; ++yy)
    for (int xx = x0; xx < x1; ++xx) set_pixel(xx, yy, c);
}

void Image::draw_rect(int x, int y, int w, int h, Rgb c) {
  if (w <= 0 || h <= 0) return;
  fill_rect(x, y, w, 1, c);
  fill_rect(x, y + h - 1, w, 1, c);
  fill_rect(x, y, 1, h, c);
  fill_rect(x + w - 1, y, 1, h, c);
}

void Image::draw_line(int x0, int y0, int x1, int y1, Rgb c) {
  // 64-bit arithmetic so that far-away end points cannot overflow; the walk visits every
  // point of the line, so callers with huge coordinates (plots) clip first.
  long long dx = std::llabs(static_cast<long long>(x1) - x0);
  long long dy = -std::llabs(static_cast<long long>(y1) - y0);
  const int sx = x0 < x1 ? 1 : -1;
  const int sy = y0 < y1 ? 1 : -1;
  long long err = dx + dy;
  long long x = x0, y = y0;
  for (;;) {
    if (x >= 0 && y >= 0 && x < width && y < height)
      set_pixel(static_cast<int>(x), static_cast<int>(y), c);
    if (x == x1 && y == y1) break;
    const long long e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y += sy;
    }
  }
}

void Image::draw_text(int x, int y, std::string_view text, Rgb c, int scale) {
  CUGRAD_CHECK(scale >= 1, "Image::draw_text: scale must be >= 1, got ", scale);
  int cx = x, cy = y;
  for (char ch : text) {
    if (ch == '\n') {
      cx = x;
      cy += kLineAdvance * scale;
      continue;
    }
    const Glyph& g = glyph_for(ch);
    for (int row = 0; row < kGlyphHeight; ++row)
      for (int col = 0; col < kGlyphWidth; ++col)
        if (g.rows[row] & (0x10 >> col)) fill_rect(cx + col * scale, cy + row * scale, scale, scale, c);
    cx += kGlyphAdvance * scale;
  }
}

void Image::blit_gray(std::span<const float> values, int src_width, int src_height, int x, int y,
                      int scale, float lo, float hi) {
  blit_planes(values, 1, src_width, src_height, x, y, scale, lo, hi);
}

void Image::blit_planes(std::span<const float> values, int channels, int src_width, int src_height,
                        int x, int y, int scale, float lo, float hi) {
  CUGRAD_CHECK(channels == 1 || channels == 3, "Image::blit_planes: channels must be 1 or 3, got ",
               channels);
  CUGRAD_CHECK(src_width >= 0 && src_height >= 0, "Image::blit_planes: negative size ", src_width,
               "x", src_height);
  const std::size_t plane = static_cast<std::size_t>(src_width) * static_cast<std::size_t>(src_height);
  CUGRAD_CHECK(values.size() == plane * channels, "Image::blit_planes: got ", values.size(),
               " values for ", channels, "x", src_height, "x", src_width);
  CUGRAD_CHECK(scale >= 1, "Image::blit_planes: scale must be >= 1, got ", scale);
  CUGRAD_CHECK(lo < hi, "Image::blit_planes: value range must satisfy lo < hi, got [", lo, ", ", hi,
               "]");
  for (int sy = 0; sy < src_height; ++sy) {
    for (int sx = 0; sx < src_width; ++sx) {
      const std::size_t i = static_cast<std::size_t>(sy) * src_width + sx;
      Rgb c;
      if (channels == 1) {
        const float v = values[i];
        if (std::isnan(v)) {
          c = colors::magenta;
        } else {
          const std::uint8_t b = to_byte(v, lo, hi);
          c = {b, b, b};
        }
      } else {
        const float r = values[i], g = values[plane + i], b = values[2 * plane + i];
        if (std::isnan(r) || std::isnan(g) || std::isnan(b))
          c = colors::magenta;
        else
          c = {to_byte(r, lo, hi), to_byte(g, lo, hi), to_byte(b, lo, hi)};
      }
      fill_rect(x + sx * scale, y + sy * scale, scale, scale, c);
    }
  }
}

void Image::blit(const Image& src, int x, int y) {
  for (int sy = 0; sy < src.height; ++sy)
    for (int sx = 0; sx < src.width; ++sx)
      if (contains(x + sx, y + sy)) set_pixel(x + sx, y + sy, src.get_pixel(sx, sy));
}

void write_png(const Image& image, const std::string& path) {
  CUGRAD_CHECK(image.width > 0 && image.height > 0, "write_png: cannot write an empty ", image.width,
               "x", image.height, " image to '", path, "'");
  CUGRAD_CHECK(image.rgb.size() == static_cast<std::size_t>(image.width) * image.height * 3,
               "write_png: image holds ", image.rgb.size(), " bytes, expected ",
               static_cast<std::size_t>(image.width) * image.height * 3, " for ", image.width, "x",
               image.height, " RGB ('", path, "')");
  const std::string tmp = path + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  {
    FilePtr file(std::fopen(tmp.c_str(), "wb"));
    if (!file) throw Error("write_png: cannot open '" + tmp + "' for writing (" + errno_text() + ")");
    png_image img;
    std::memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = static_cast<png_uint_32>(image.width);
    img.height = static_cast<png_uint_32>(image.height);
    img.format = PNG_FORMAT_RGB;
    PngImageGuard guard{&img};
    const bool ok = png_image_write_to_stdio(&img, file.get(), 0, image.rgb.data(),
                                             static_cast<png_int_32>(image.width * 3), nullptr) != 0;
    if (!ok) {
      const std::string why = img.message;
      file.reset();
      std::remove(tmp.c_str());
      throw Error("write_png: libpng failed writing '" + path + "': " + why);
    }
    const bool flushed = std::fflush(file.get()) == 0 && !std::ferror(file.get());
    const bool closed = std::fclose(file.release()) == 0;
    if (!flushed || !closed) {
      const std::string why = errno_text();
      std::remove(tmp.c_str());
      throw Error("write_png: cannot write '" + path + "' (" + why + ")");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    std::remove(tmp.c_str());
    throw Error("write_png: cannot rename '" + tmp + "' to '" + path + "' (" + why + ")");
  }
}

Image read_png(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Error("read_png: cannot open '" + path + "' (" + errno_text() + ")");
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  PngImageGuard guard{&img};
  if (png_image_begin_read_from_stdio(&img, file.get()) == 0)
    throw Error("read_png: '" + path + "' is not a readable PNG: " + img.message);
  img.format = PNG_FORMAT_RGB;
  Image out(static_cast<int>(img.width), static_cast<int>(img.height));
  if (png_image_finish_read(&img, nullptr, out.rgb.data(), static_cast<png_int_32>(img.width * 3),
                            nullptr) == 0)
    throw Error("read_png: cannot decode '" + path + "': " + img.message);
  return out;
}

}  // namespace cugrad::examples
