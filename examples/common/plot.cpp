// Line plots, histograms and image grids drawn with the Image primitives and the built-in
// font: axis ranges, round tick steps, clipping, gaps and legends.
#include "examples/common/plot.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include "cugrad/error.h"

namespace cugrad::examples {
namespace {

constexpr Rgb kAxisColor = colors::black;
constexpr Rgb kGridColor{232, 232, 232};
constexpr Rgb kTextColor{30, 30, 30};
constexpr Rgb kLegendBorder{160, 160, 160};
constexpr int kTickLength = 4;
constexpr int kMinWidth = 120;
constexpr int kMinHeight = 80;

struct Rect {
  int x0, y0, x1, y1;  // inclusive bounds
  bool contains(int x, int y) const { return x >= x0 && x <= x1 && y >= y0 && y <= y1; }
};

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
};

// A round step (1, 2 or 5 times a power of ten) giving about `target` intervals over `span`.
double nice_step(double span, int target) {
  if (!(span > 0.0) || !std::isfinite(span)) return 1.0;
  const double raw = span / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double f = norm < 1.5 ? 1.0 : norm < 3.0 ? 2.0 : norm < 7.0 ? 5.0 : 10.0;
  return f * mag;
}

// Multiples of `step` within [lo, hi] (with a little slack for rounding), exact zero snapped.
std::vector<double> tick_values(double lo, double hi, double step) {
  std::vector<double> ticks;
  const double eps = step * 1e-9;
  const double first = std::ceil((lo - eps) / step);
  for (double k = first;; k += 1.0) {
    double v = k * step;
    if (v > hi + eps || ticks.size() > 1000) break;
    if (std::abs(v) < step * 1e-9) v = 0.0;
    ticks.push_back(v);
  }
  return ticks;
}

// Ticks for a log10 axis spanning [lo, hi] (in log10 units): 1-2-5 per decade, every
// 1..9 on a narrow range, or only powers of ten (every n-th decade) on a wide one.
std::vector<double> log_tick_values(double lo, double hi, int target) {
  auto gen = [&](std::initializer_list<double> mantissas, long long decade_step) {
    std::vector<double> t;
    for (long long k = static_cast<long long>(std::floor(lo)); k <= static_cast<long long>(std::ceil(hi)); ++k) {
      if (((k % decade_step) + decade_step) % decade_step != 0) continue;
      for (double m : mantissas) {
        const double v = static_cast<double>(k) + std::log10(m);
        if (v >= lo - 1e-9 && v <= hi + 1e-9) t.push_back(v);
      }
    }
    return t;
  };
  if (!(hi - lo < 400.0)) return {};
  std::vector<double> t = gen({1, 2, 5}, 1);
  if (t.size() < 3) {
    t = gen({1, 2, 3, 4, 5, 6, 7, 8, 9}, 1);
  } else if (static_cast<int>(t.size()) > target + 2) {
    const auto step = static_cast<long long>(std::max(1.0, std::round(nice_step(hi - lo, target))));
    t = gen({1}, step);
  }
  return t;
}

// Widens a degenerate range around its value.
void widen_if_flat(double& lo, double& hi) {
  if (hi - lo > 1e-12 * std::max(1.0, std::abs(lo))) return;
  const double d = lo != 0.0 ? std::abs(lo) * 0.1 : 1.0;
  lo -= d;
  hi += d;
}

// Bresenham with a square brush of `width` pixels, clipped to `clip`.
void draw_thick_line(Image& img, int x0, int y0, int x1, int y1, Rgb c, int width, const Rect& clip) {
  const int before = (width - 1) / 2, after = width / 2;
  auto stamp = [&](int x, int y) {
    for (int dy = -before; dy <= after; ++dy)
      for (int dx = -before; dx <= after; ++dx)
        if (clip.contains(x + dx, y + dy)) img.set_pixel(x + dx, y + dy, c);
  };
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (int x = x0, y = y0;;) {
    stamp(x, y);
    if (x == x1 && y == y1) break;
    const int e2 = 2 * err;
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

// Liang-Barsky: clips the segment to the rectangle; false when nothing is left.
bool clip_segment(double& x0, double& y0, double& x1, double& y1, const Rect& r) {
  double t0 = 0.0, t1 = 1.0;
  const double dx = x1 - x0, dy = y1 - y0;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - r.x0, r.x1 - x0, y0 - r.y0, r.y1 - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0.0) {
      if (q[i] < 0.0) return false;
      continue;
    }
    const double t = q[i] / p[i];
    if (p[i] < 0.0)
      t0 = std::max(t0, t);
    else
      t1 = std::min(t1, t);
    if (t0 > t1) return false;
  }
  const double nx0 = x0 + t0 * dx, ny0 = y0 + t0 * dy;
  x1 = x0 + t1 * dx;
  y1 = y0 + t1 * dy;
  x0 = nx0;
  y0 = ny0;
  return true;
}

// Draws `text` turned 90 degrees counter-clockwise (reading bottom to top), its bounding box's
// top-left at (x, y).
void draw_text_vertical(Image& img, int x, int y, const std::string& text, Rgb c) {
  const int w = text_width(text), h = text_height(text);
  if (w == 0) return;
  Image tmp(w, h, colors::white);
  tmp.draw_text(0, 0, text, colors::black);
  for (int ty = 0; ty < h; ++ty)
    for (int tx = 0; tx < w; ++tx)
      if (tmp.get_pixel(tx, ty) == colors::black) img.set_pixel(x + ty, y + (w - 1 - tx), c);
}

// Axes, ticks, grid and labels shared by line_plot and bar_histogram.
struct Axes {
  Rect area{};
  double xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  std::vector<double> xticks, yticks;
  double xstep = 1, ystep = 1;
  bool log_y = false;

  double sx(double x) const { return area.x0 + (x - xlo) / (xhi - xlo) * (area.x1 - area.x0); }
  double sy(double y) const { return area.y1 - (y - ylo) / (yhi - ylo) * (area.y1 - area.y0); }
  std::string ylabel(double v) const {
    if (!log_y) return format_tick(v, ystep);
    std::ostringstream os;
    os << std::setprecision(4) << std::pow(10.0, v);
    return os.str();
  }
};

// Computes the plot area for the given ranges and options, draws background, grid, title
// and axis labels. The caller draws the data, then calls finish_axes.
Axes layout_axes(Image& img, double xlo, double xhi, double ylo, double yhi, bool log_y,
                 const PlotOptions& o, double min_ystep) {
  Axes a;
  a.xlo = xlo;
  a.xhi = xhi;
  a.ylo = ylo;
  a.yhi = yhi;
  a.log_y = log_y;
  const int title_scale = (!o.title.empty() && text_width(o.title, 2) <= o.width - 20) ? 2 : 1;
  const int top = o.title.empty() ? 10 : text_height(o.title, title_scale) + 14;
  const int bottom = kTickLength + 4 + kGlyphHeight + 6 + (o.x_label.empty() ? 0 : kLineAdvance + 6);
  const int approx_h = o.height - top - bottom;
  const int ytarget = std::max(2, approx_h / 50);
  a.ystep = std::max(nice_step(yhi - ylo, ytarget), min_ystep);
  a.yticks = log_y ? log_tick_values(ylo, yhi, ytarget) : tick_values(ylo, yhi, a.ystep);
  if (a.yticks.size() < 2) a.yticks = tick_values(ylo, yhi, a.ystep);
  int label_w = 0;
  for (double v : a.yticks) label_w = std::max(label_w, text_width(a.ylabel(v)));
  const int left = 6 + (o.y_label.empty() ? 0 : kLineAdvance + 6) + label_w + 4 + kTickLength;
  const int approx_w = o.width - left - 10;
  a.xstep = nice_step(xhi - xlo, std::max(2, approx_w / 90));
  a.xticks = tick_values(xlo, xhi, a.xstep);
  int right = 10;
  if (!a.xticks.empty()) right = std::max(right, text_width(format_tick(a.xticks.back(), a.xstep)) / 2 + 4);
  a.area = Rect{left, top, o.width - right - 1, o.height - bottom - 1};
  CUGRAD_CHECK(a.area.x1 - a.area.x0 >= 20 && a.area.y1 - a.area.y0 >= 20, "plot: a ", o.width, "x",
               o.height, " image leaves no room for the plot area; make it larger");

  for (double v : a.xticks) {
    const int x = static_cast<int>(std::lround(a.sx(v)));
    img.fill_rect(x, a.area.y0, 1, a.area.y1 - a.area.y0 + 1, kGridColor);
  }
  for (double v : a.yticks) {
    const int y = static_cast<int>(std::lround(a.sy(v)));
    img.fill_rect(a.area.x0, y, a.area.x1 - a.area.x0 + 1, 1, kGridColor);
  }
  if (!o.title.empty()) {
    const int tw = text_width(o.title, title_scale);
    img.draw_text(std::max(0, (o.width - tw) / 2), 6, o.title, kTextColor, title_scale);
  }
  if (!o.x_label.empty()) {
    const int cx = (a.area.x0 + a.area.x1) / 2;
    img.draw_text(cx - text_width(o.x_label) / 2, o.height - kGlyphHeight - 4, o.x_label, kTextColor);
  }
  if (!o.y_label.empty()) {
    const int cy = (a.area.y0 + a.area.y1) / 2;
    draw_text_vertical(img, 6, cy - text_width(o.y_label) / 2, o.y_label, kTextColor);
  }
  return a;
}

// Axis lines, tick marks and tick labels, drawn over the data.
void finish_axes(Image& img, const Axes& a) {
  const Rect& r = a.area;
  img.fill_rect(r.x0, r.y0, 1, r.y1 - r.y0 + 1, kAxisColor);
  img.fill_rect(r.x0, r.y1, r.x1 - r.x0 + 1, 1, kAxisColor);
  int last_right = std::numeric_limits<int>::min();
  for (double v : a.xticks) {
    const int x = static_cast<int>(std::lround(a.sx(v)));
    img.fill_rect(x, r.y1 + 1, 1, kTickLength, kAxisColor);
    const std::string label = format_tick(v, a.xstep);
    const int w = text_width(label);
    const int lx = std::clamp(x - w / 2, 0, std::max(0, img.width - w));
    if (lx <= last_right + 4) continue;  // would overlap the previous label
    img.draw_text(lx, r.y1 + kTickLength + 4, label, kTextColor);
    last_right = lx + w;
  }
  for (double v : a.yticks) {
    const int y = static_cast<int>(std::lround(a.sy(v)));
    img.fill_rect(r.x0 - kTickLength, y, kTickLength, 1, kAxisColor);
    const std::string label = a.ylabel(v);
    img.draw_text(r.x0 - kTickLength - 4 - text_width(label), y - kGlyphHeight / 2, label, kTextColor);
  }
}

void check_options(const PlotOptions& o, const char* fn) {
  CUGRAD_CHECK(o.width >= kMinWidth && o.height >= kMinHeight, fn, ": image size must be at least ",
               kMinWidth, "x", kMinHeight, ", got ", o.width, "x", o.height);
  CUGRAD_CHECK(o.line_width >= 1 && o.line_width <= 4, fn, ": line_width must be 1 to 4, got ",
               o.line_width);
}

}  // namespace

Rgb palette_color(std::size_t i) {
  static constexpr Rgb kPalette[] = {
      {31, 119, 180}, {214, 39, 40},  {44, 160, 44},  {255, 127, 14}, {148, 103, 189},
      {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  return kPalette[i % (sizeof kPalette / sizeof kPalette[0])];
}

std::string format_tick(double value, double step) {
  if (!std::isfinite(value)) return value != value ? "nan" : (value > 0 ? "inf" : "-inf");
  if (step > 0 && std::abs(value) < step * 1e-6) value = 0.0;
  if (value == 0.0) return "0";
  std::ostringstream os;
  const double mag = std::abs(value);
  if (mag >= 1e7 || (step > 0 && step < 1e-4) || mag < 1e-4) {
    os << std::setprecision(3) << value;  // shortest of %g: "1e-05", "2.5e+08"
    return os.str();
  }
  int decimals = 0;
  if (step > 0 && step < 1.0) decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  os << std::fixed << std::setprecision(std::clamp(decimals, 0, 6)) << value;
  return os.str();
}

Image line_plot(const std::vector<Series>& series, const PlotOptions& o) {
  CUGRAD_CHECK(!series.empty(), "line_plot: no series to plot");
  check_options(o, "line_plot");
  for (const Series& s : series)
    CUGRAD_CHECK(s.xs.size() == s.ys.size(), "line_plot: series '", s.name, "' has ", s.xs.size(),
                 " x values but ", s.ys.size(), " y values");
  if (o.x_min && o.x_max) CUGRAD_CHECK(*o.x_min < *o.x_max, "line_plot: x_min must be < x_max");
  if (o.y_min && o.y_max) CUGRAD_CHECK(*o.y_min < *o.y_max, "line_plot: y_min must be < y_max");
  if (o.log_y) {
    if (o.y_min) CUGRAD_CHECK(*o.y_min > 0, "line_plot: log_y needs y_min > 0, got ", *o.y_min);
    if (o.y_max) CUGRAD_CHECK(*o.y_max > 0, "line_plot: log_y needs y_max > 0, got ", *o.y_max);
  }

  // Transformed points; NaN marks a gap.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::vector<std::pair<double, double>>> pts(series.size());
  Range xr, yr;
  for (std::size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    pts[k].resize(s.xs.size());
    for (std::size_t i = 0; i < s.xs.size(); ++i) {
      double x = s.xs[i], y = s.ys[i];
      if (o.log_y) y = y > 0 ? std::log10(y) : nan;
      if (!std::isfinite(x) || !std::isfinite(y)) {
        pts[k][i] = {nan, nan};
        continue;
      }
      pts[k][i] = {x, y};
      xr.add(x);
      yr.add(y);
    }
  }
  double xlo = o.x_min.value_or(xr.empty() ? 0.0 : xr.lo);
  double xhi = o.x_max.value_or(xr.empty() ? 1.0 : xr.hi);
  if (!(xlo < xhi)) {
    if (o.x_min && !o.x_max) xhi = xlo + std::max(1.0, std::abs(xlo) * 0.1);
    else if (o.x_max && !o.x_min) xlo = xhi - std::max(1.0, std::abs(xhi) * 0.1);
    else widen_if_flat(xlo, xhi);
  }
  double ylo, yhi;
  {
    double dlo = yr.empty() ? 0.0 : yr.lo, dhi = yr.empty() ? 1.0 : yr.hi;
    widen_if_flat(dlo, dhi);
    const double margin = yr.empty() ? 0.0 : 0.05 * (dhi - dlo);
    ylo = o.y_min ? (o.log_y ? std::log10(*o.y_min) : *o.y_min) : dlo - margin;
    yhi = o.y_max ? (o.log_y ? std::log10(*o.y_max) : *o.y_max) : dhi + margin;
    if (!(ylo < yhi)) {
      if (o.y_min && !o.y_max) yhi = ylo + std::max(1.0, std::abs(ylo) * 0.1);
      else if (o.y_max && !o.y_min) ylo = yhi - std::max(1.0, std::abs(yhi) * 0.1);
      else widen_if_flat(ylo, yhi);
    }
  }

  Image img(o.width, o.height, colors::white);
  const Axes a = layout_axes(img, xlo, xhi, ylo, yhi, o.log_y, o, 0.0);
  const Rect& r = a.area;

  for (std::size_t k = 0; k < series.size(); ++k) {
    const Rgb color = series[k].color.value_or(palette_color(k));
    const auto& p = pts[k];
    auto valid = [&](std::size_t i) { return !std::isnan(p[i].first); };
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (!valid(i)) continue;
      const double x = a.sx(p[i].first), y = a.sy(p[i].second);
      const bool prev = i > 0 && valid(i - 1);
      const bool next = i + 1 < p.size() && valid(i + 1);
      if (!prev && !next) {  // isolated point: a 3x3 (or larger) marker
        if (x < r.x0 - 2 || x > r.x1 + 2 || y < r.y0 - 2 || y > r.y1 + 2) continue;
        const int cx = static_cast<int>(std::lround(x)), cy = static_cast<int>(std::lround(y));
        const int half = std::max(1, o.line_width / 2 + 1);
        for (int dy = -half; dy <= half; ++dy)
          for (int dx = -half; dx <= half; ++dx)
            if (r.contains(cx + dx, cy + dy)) img.set_pixel(cx + dx, cy + dy, color);
      }
      if (next) {
        double x0 = x, y0 = y, x1 = a.sx(p[i + 1].first), y1 = a.sy(p[i + 1].second);
        if (clip_segment(x0, y0, x1, y1, r))
          draw_thick_line(img, static_cast<int>(std::lround(x0)), static_cast<int>(std::lround(y0)),
                          static_cast<int>(std::lround(x1)), static_cast<int>(std::lround(y1)), color,
                          o.line_width, r);
      }
    }
  }
  finish_axes(img, a);

  if (o.legend) {
    std::vector<std::size_t> named;
    int name_w = 0;
    for (std::size_t k = 0; k < series.size(); ++k)
      if (!series[k].name.empty()) {
        named.push_back(k);
        name_w = std::max(name_w, text_width(series[k].name));
      }
    if (!named.empty()) {
      const int row_h = kLineAdvance + 3;
      const int w = 8 + 16 + 6 + name_w + 8;
      const int h = static_cast<int>(named.size()) * row_h + 8;
      const int lx = std::max(r.x0 + 2, r.x1 - 6 - w), ly = r.y0 + 6;
      img.fill_rect(lx, ly, w, h, colors::white);
      img.draw_rect(lx, ly, w, h, kLegendBorder);
      for (std::size_t j = 0; j < named.size(); ++j) {
        const Series& s = series[named[j]];
        const int ty = ly + 5 + static_cast<int>(j) * row_h;
        img.fill_rect(lx + 8, ty + kGlyphHeight / 2 - 1, 16, 3, s.color.value_or(palette_color(named[j])));
        img.draw_text(lx + 8 + 16 + 6, ty, s.name, kTextColor);
      }
    }
  }
  return img;
}

Image bar_histogram(const std::vector<std::int64_t>& counts, double lo, double hi,
                    const std::string& title, const PlotOptions& options) {
  CUGRAD_CHECK(!counts.empty(), "bar_histogram: no bins");
  CUGRAD_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi,
               "bar_histogram: need finite lo <= hi, got [", lo, ", ", hi, "]");
  widen_if_flat(lo, hi);
  PlotOptions o = options;
  if (!title.empty()) o.title = title;
  check_options(o, "bar_histogram");
  std::int64_t top = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    CUGRAD_CHECK(counts[i] >= 0, "bar_histogram: bin ", i, " has a negative count ", counts[i]);
    top = std::max(top, counts[i]);
  }
  // The y axis runs to a round value >= the largest count.
  double yhi = 1.0;
  if (top > 0) {
    const double step = std::max(1.0, nice_step(static_cast<double>(top), 5));
    yhi = std::ceil(static_cast<double>(top) / step) * step;
  }

  Image img(o.width, o.height, colors::white);
  const Axes a = layout_axes(img, lo, hi, 0.0, yhi, false, o, 1.0);
  const Rect& r = a.area;
  const double bw = (hi - lo) / static_cast<double>(counts.size());
  const int plot_h = r.y1 - r.y0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const int x0 = static_cast<int>(std::lround(a.sx(lo + bw * static_cast<double>(i))));
    const int x1 = static_cast<int>(std::lround(a.sx(lo + bw * static_cast<double>(i + 1))));
    int w = x1 - x0;
    if (w >= 4) --w;  // a 1-pixel gap between wide bars
    w = std::max(w, 1);
    const int h = static_cast<int>(std::lround(static_cast<double>(counts[i]) / yhi * plot_h));
    img.fill_rect(x0 + 1, r.y1 - h, w, h, o.bar_color);
  }
  finish_axes(img, a);
  return img;
}

Image image_grid(const std::vector<std::vector<GridCell>>& rows, const GridOptions& o) {
  CUGRAD_CHECK(o.scale >= 1, "image_grid: scale must be >= 1, got ", o.scale);
  CUGRAD_CHECK(o.padding >= 0, "image_grid: padding must be >= 0, got ", o.padding);
  std::size_t cols = 0;
  for (const auto& row : rows) cols = std::max(cols, row.size());
  CUGRAD_CHECK(cols > 0, "image_grid: the grid has no cells");

  std::vector<int> col_w(cols, 0), img_h(rows.size(), 0), cap_h(rows.size(), 0);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      const GridCell& c = rows[i][j];
      CUGRAD_CHECK(c.channels == 1 || c.channels == 3, "image_grid: cell (", i, ", ", j,
                   ") has channels = ", c.channels, "; expected 1 or 3");
      CUGRAD_CHECK(c.width >= 0 && c.height >= 0, "image_grid: cell (", i, ", ", j,
                   ") has a negative size ", c.width, "x", c.height);
      const std::size_t expect = static_cast<std::size_t>(c.channels) * c.width * c.height;
      CUGRAD_CHECK(c.values.empty() || c.values.size() == expect, "image_grid: cell (", i, ", ", j,
                   ") has ", c.values.size(), " values, expected ", c.channels, "x", c.height, "x",
                   c.width, " = ", expect);
      col_w[j] = std::max({col_w[j], c.width * o.scale, text_width(c.caption)});
      img_h[i] = std::max(img_h[i], c.height * o.scale);
      cap_h[i] = std::max(cap_h[i], text_height(c.caption));
    }
  }
  const int pad = o.padding;
  const int title_h = o.title.empty() ? 0 : text_height(o.title) + pad;
  int width = pad, height = pad + title_h;
  for (int w : col_w) width += w + pad;
  for (std::size_t i = 0; i < rows.size(); ++i) height += img_h[i] + (cap_h[i] ? cap_h[i] + 3 : 0) + pad;
  width = std::max(width, text_width(o.title) + 2 * pad);

  Image img(width, height, o.background);
  if (!o.title.empty()) img.draw_text((width - text_width(o.title)) / 2, pad, o.title, kTextColor);
  int y = pad + title_h;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    int x = pad;
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      const GridCell& c = rows[i][j];
      const int w = c.width * o.scale, h = c.height * o.scale;
      const int ix = x + (col_w[j] - w) / 2;
      if (!c.values.empty() && w > 0 && h > 0) {
        Range vr;
        for (float v : c.values)
          if (std::isfinite(v)) vr.add(v);
        double lo = c.lo.value_or(vr.empty() ? 0.0 : vr.lo);
        double hi = c.hi.value_or(vr.empty() ? 1.0 : vr.hi);
        if (!(lo < hi) && !(c.lo && c.hi)) {  // a constant image, or data beyond a given bound
          if (c.lo) {
            hi = lo + 1.0;
          } else if (c.hi) {
            lo = hi - 1.0;
          } else {
            lo -= 0.5;
            hi += 0.5;
          }
        }
        CUGRAD_CHECK(lo < hi, "image_grid: cell (", i, ", ", j, ") has value range [", lo, ", ", hi,
                     "]; need lo < hi");
        img.draw_rect(ix - 1, y - 1, w + 2, h + 2, colors::light_gray);
        img.blit_planes(c.values, c.channels, c.width, c.height, ix, y, o.scale,
                        static_cast<float>(lo), static_cast<float>(hi));
      }
      if (!c.caption.empty()) {
        // Centre each caption line under the slot.
        int ly = y + img_h[i] + 3;
        std::size_t start = 0;
        while (start <= c.caption.size()) {
          const std::size_t end = std::min(c.caption.find('\n', start), c.caption.size());
          const std::string line = c.caption.substr(start, end - start);
          img.draw_text(x + (col_w[j] - text_width(line)) / 2, ly, line, c.caption_color);
          ly += kLineAdvance;
          start = end + 1;
        }
      }
      x += col_w[j] + pad;
    }
    y += img_h[i] + (cap_h[i] ? cap_h[i] + 3 : 0) + pad;
  }
  return img;
}

Image image_grid(const std::vector<std::vector<GridCell>>& rows, int scale) {
  GridOptions o;
  o.scale = scale;
  return image_grid(rows, o);
}

}  // namespace cugrad::examples
