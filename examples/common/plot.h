// Charts for the example programs, drawn into an Image: line plots (training curves),
// histograms, and grids of small float images with captions (adversarial examples).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "examples/common/png.h"

namespace cugrad::examples {

/// One curve of a line plot. xs and ys have equal lengths; a NaN or infinite x or y leaves a
/// gap in the curve. Without a colour the series takes palette_color(its index).
struct Series {
  std::string name;
  std::vector<double> xs;
  std::vector<double> ys;
  std::optional<Rgb> color;
};

/// The i-th colour of a ten-colour palette of mutually distinct, readable colours (cycles).
Rgb palette_color(std::size_t i);

struct PlotOptions {
  int width = 640;
  int height = 400;
  std::string title;
  std::string x_label;
  std::string y_label;
  bool legend = true;
  /// Logarithmic y axis: non-positive y values become gaps.
  bool log_y = false;
  /// Axis limits; unset limits come from the data (y with a 5% margin).
  std::optional<double> x_min, x_max, y_min, y_max;
  /// Curve thickness in pixels (1 to 4).
  int line_width = 2;
  /// Bar colour (bar_histogram).
  Rgb bar_color{70, 130, 180};
};

/// A line plot of `series` with axes, ticks with numeric labels, light grid lines, an
/// optional title, axis labels and a legend. The image has exactly options.width x
/// options.height pixels. Isolated points (a single point, or one between gaps) are drawn
/// as 3x3 squares. A constant series gets a y range around its value; series with no finite
/// points draw nothing (the axes then span [0, 1]). Throws cugrad::ValueError for an empty
/// `series` list, xs/ys of different lengths, a size too small for the axes (< 120 x 80), or
/// limits with min >= max.
Image line_plot(const std::vector<Series>& series, const PlotOptions& options = {});

/// A histogram of `counts` over [lo, hi] (bin i spans lo + i * (hi - lo) / counts.size()
/// onwards), bars from a zero baseline, bar height proportional to the count (the y axis
/// runs from 0 to a round value >= the largest count). lo == hi (a constant tensor) is drawn
/// over a range widened around the value. options.title is replaced by `title` when that is
/// not empty; x_min/x_max/y_min/y_max/log_y are ignored. Throws cugrad::ValueError for no
/// bins, a negative count, lo > hi or a non-finite bound.
Image bar_histogram(const std::vector<std::int64_t>& counts, double lo, double hi,
                    const std::string& title, const PlotOptions& options = {});

/// One cell of image_grid: a width x height float image of `channels` (1 or 3) planes,
/// channel-major, with the value range [lo, hi] mapped to black..white (an unset bound is the
/// data's min or max) and a caption ('\n' for several lines) under it. A cell with no values
/// leaves a blank space of width x height with its caption.
///   GridCell{28, 28, pixels, 0.0f, 1.0f, "pred: 3"}
struct GridCell {
  int width = 0;
  int height = 0;
  std::vector<float> values;
  std::optional<float> lo, hi;
  std::string caption;
  int channels = 1;
  Rgb caption_color = colors::black;
};

struct GridOptions {
  /// Each image pixel becomes scale x scale pixels.
  int scale = 3;
  /// Space in pixels around and between cells.
  int padding = 6;
  std::string title;
  Rgb background = colors::white;
};

/// Lays `rows` (which may have different lengths) out as a grid: every column as wide as its
/// widest cell or caption, every row as tall as its tallest cell plus its captions, each
/// image centred in its slot with its caption centred under it. Throws cugrad::ValueError
/// for an empty grid, a cell whose values do not match channels x height x width, or
/// scale < 1.
Image image_grid(const std::vector<std::vector<GridCell>>& rows, const GridOptions& options = {});
/// image_grid with default options but this scale.
Image image_grid(const std::vector<std::vector<GridCell>>& rows, int scale);

/// Formats a tick label: fixed notation with as many decimals as `step` needs, scientific
/// for very large or very small magnitudes ("0.25", "1500", "1e-05").
std::string format_tick(double value, double step);

}  // namespace cugrad::examples
