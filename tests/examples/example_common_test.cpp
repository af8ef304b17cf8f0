// Tests of the examples' support library (examples/common): PNG round trips, text, line
// plots, histograms, image grids, CSV quoting, the progress bar and the stopwatch.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "cugrad/error.h"
#include "examples/common/csv.h"
#include "examples/common/plot.h"
#include "examples/common/png.h"
#include "examples/common/progress.h"
#include "examples/common/timer.h"

namespace ex = cugrad::examples;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) { return std::string(CUGRAD_TEST_TMP_DIR) + "/" + name; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const cugrad::Error& e) {
    return e.what();
  }
  return "";
}

int count_color(const ex::Image& img, ex::Rgb c) {
  int n = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) n += img.get_pixel(x, y) == c;
  return n;
}

int count_color_in_column(const ex::Image& img, int x, ex::Rgb c) {
  int n = 0;
  for (int y = 0; y < img.height; ++y) n += img.get_pixel(x, y) == c;
  return n;
}

// Longest vertical (or horizontal) run of colour c anywhere in the image.
int longest_run(const ex::Image& img, ex::Rgb c, bool vertical) {
  int best = 0;
  const int outer = vertical ? img.width : img.height, inner = vertical ? img.height : img.width;
  for (int o = 0; o < outer; ++o) {
    int run = 0;
    for (int i = 0; i < inner; ++i) {
      const ex::Rgb p = vertical ? img.get_pixel(o, i) : img.get_pixel(i, o);
      run = p == c ? run + 1 : 0;
      best = std::max(best, run);
    }
  }
  return best;
}

// Pixels differing from `background`, and their bounding box.
struct InkBox {
  int count = 0, x0 = 1 << 30, y0 = 1 << 30, x1 = -1, y1 = -1;
};
InkBox ink(const ex::Image& img, ex::Rgb background) {
  InkBox b;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      if (!(img.get_pixel(x, y) == background)) {
        ++b.count;
        b.x0 = std::min(b.x0, x);
        b.y0 = std::min(b.y0, y);
        b.x1 = std::max(b.x1, x);
        b.y1 = std::max(b.y1, y);
      }
  return b;
}

constexpr ex::Rgb kRed{220, 0, 0};
constexpr ex::Rgb kBlue{0, 0, 220};

}  // namespace

// ---- PNG and drawing ----

TEST(ExamplePng, RoundTripIsPixelExact) {
  ex::Image img(37, 23);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      img.set_pixel(x, y, {static_cast<std::uint8_t>(x * 7 + y), static_cast<std::uint8_t>(y * 11),
                           static_cast<std::uint8_t>((x * y) & 255)});
  const std::string path = tmp_path("example_common_roundtrip.png");
  std::remove(path.c_str());
  ex::write_png(img, path);
  const ex::Image back = ex::read_png(path);
  EXPECT_EQ(back.width, 37);
  EXPECT_EQ(back.height, 23);
  EXPECT_EQ(back.rgb, img.rgb);
  // The temporary file was renamed away: only the target is left.
  for (const auto& entry : fs::directory_iterator(CUGRAD_TEST_TMP_DIR))
    EXPECT_EQ(entry.path().filename().string().find("example_common_roundtrip.png.tmp"), std::string::npos);
  // Overwriting an existing file works (rename over it).
  img.set_pixel(0, 0, kRed);
  ex::write_png(img, path);
  EXPECT_EQ(ex::read_png(path).get_pixel(0, 0), kRed);
}

TEST(ExamplePng, ErrorsNameThePath) {
  ex::Image img(4, 4);
  const std::string bad = "/nonexistent-dir-cugrad/out.png";
  EXPECT_NE(error_of([&] { ex::write_png(img, bad); }).find(bad), std::string::npos);
  EXPECT_NE(error_of([&] { ex::read_png(bad); }).find(bad), std::string::npos);
  const std::string garbage = tmp_path("example_common_garbage.png");
  std::ofstream(garbage) << "this is not a png";
  EXPECT_NE(error_of([&] { ex::read_png(garbage); }).find(garbage), std::string::npos);
  EXPECT_NE(error_of([&] { ex::write_png(ex::Image(), tmp_path("empty.png")); }), "");
}

TEST(ExamplePng, DrawingPrimitivesClip) {
  ex::Image img(10, 8, ex::colors::white);
  img.fill_rect(-5, -5, 8, 7, kRed);  // clipped to x 0..2, y 0..1
  EXPECT_EQ(count_color(img, kRed), 3 * 2);
  EXPECT_EQ(img.get_pixel(2, 1), kRed);
  EXPECT_EQ(img.get_pixel(3, 1), ex::colors::white);
  img.draw_line(0, 7, 9, 7, kBlue);
  EXPECT_EQ(count_color(img, kBlue), 10);
  img.draw_line(-100, -100, 100, 100, kBlue);  // the diagonal, clipped
  EXPECT_EQ(img.get_pixel(5, 5), kBlue);
  img.set_pixel(100, 100, kRed);  // ignored
  EXPECT_THROW(img.get_pixel(10, 0), cugrad::ValueError);
  EXPECT_THROW(ex::Image(-1, 3), cugrad::ValueError);
  const ex::Image wrapped(2, 1, std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6});
  EXPECT_EQ(wrapped.get_pixel(1, 0), (ex::Rgb{4, 5, 6}));
  EXPECT_THROW(ex::Image(2, 2, std::vector<std::uint8_t>(6)), cugrad::ValueError);
}

TEST(ExampleText, InkStaysInsideTheMeasuredBox) {
  const std::string text = "Loss 0.25 - 99% a/b:c";
  for (int scale : {1, 2}) {
    ex::Image img(300, 60, ex::colors::white);
    const int x = 7, y = 9;
    img.draw_text(x, y, text, ex::colors::black, scale);
    const InkBox b = ink(img, ex::colors::white);
    EXPECT_GT(b.count, 40 * scale * scale);
    EXPECT_GE(b.x0, x);
    EXPECT_GE(b.y0, y);
    EXPECT_LT(b.x1, x + ex::text_width(text, scale));
    EXPECT_LT(b.y1, y + ex::text_height(text, scale));
    // The first glyph ('L') has its vertical stroke at the left edge and the text reaches the
    // bottom-right part of the box.
    EXPECT_EQ(b.x0, x);
    EXPECT_GT(b.x1, x + ex::text_width(text, scale) - 3 * scale);
  }
  EXPECT_EQ(ex::text_width("abc"), 3 * 6 - 1);
  EXPECT_EQ(ex::text_height("a\nb"), 9 + 7);
  EXPECT_EQ(ex::text_width(""), 0);
}

TEST(ExampleText, LowerCaseIsCapitalsAndUnknownIsQuestionMark) {
  auto render = [](const std::string& s) {
    ex::Image img(40, 10);
    img.draw_text(1, 1, s, ex::colors::black);
    return img.rgb;
  };
  EXPECT_EQ(render("cat"), render("CAT"));
  EXPECT_EQ(render("\x01"), render("?"));
  EXPECT_NE(render("0"), render("8"));
  EXPECT_NE(render("1"), render("7"));
  EXPECT_NE(render("."), render(" "));
}

TEST(ExampleImage, BlitMapsTheValueRange) {
  ex::Image img(20, 20, ex::colors::white);
  const std::vector<float> v = {0.0f, 0.5f, 1.0f, 2.0f, -1.0f, std::nanf("")};
  img.blit_gray(v, 3, 2, 1, 2, 2, 0.0f, 1.0f);
  EXPECT_EQ(img.get_pixel(1, 2), ex::colors::black);
  EXPECT_EQ(img.get_pixel(2, 3), ex::colors::black);  // same 2x2 block
  EXPECT_EQ(img.get_pixel(3, 2), (ex::Rgb{128, 128, 128}));
  EXPECT_EQ(img.get_pixel(5, 3), ex::colors::white);
  EXPECT_EQ(img.get_pixel(1, 4), ex::colors::white);   // 2 clamps to white
  EXPECT_EQ(img.get_pixel(3, 4), ex::colors::black);   // -1 clamps to black
  EXPECT_EQ(img.get_pixel(5, 4), ex::colors::magenta); // NaN
  EXPECT_THROW(img.blit_gray(v, 4, 2, 0, 0, 1, 0.0f, 1.0f), cugrad::ValueError);
  EXPECT_THROW(img.blit_gray(v, 3, 2, 0, 0, 1, 1.0f, 1.0f), cugrad::ValueError);
}

// ---- line plots ----

TEST(ExamplePlot, SizeAxesAndDistinctSeriesColors) {
  ex::Series a{"train", {0, 1, 2, 3, 4}, {2.3, 1.2, 0.8, 0.6, 0.5}, kRed};
  ex::Series b{"test", {0, 1, 2, 3, 4}, {2.4, 1.5, 1.1, 0.9, 0.85}, kBlue};
  ex::PlotOptions o;
  o.width = 500;
  o.height = 320;
  o.title = "Loss";
  o.x_label = "epoch";
  o.y_label = "loss";
  const ex::Image img = ex::line_plot({a, b}, o);
  ASSERT_EQ(img.width, 500);
  ASSERT_EQ(img.height, 320);
  EXPECT_EQ(img.rgb.size(), 500u * 320u * 3u);
  // Both axes: long black runs, vertical and horizontal.
  EXPECT_GT(longest_run(img, ex::colors::black, true), 320 / 2);
  EXPECT_GT(longest_run(img, ex::colors::black, false), 500 / 2);
  EXPECT_GT(count_color(img, kRed), 200);
  EXPECT_GT(count_color(img, kBlue), 200);
  // Default colours: two series without colours get two different palette colours.
  ex::Series c{"c", {0, 1}, {0, 1}, std::nullopt}, d{"d", {0, 1}, {1, 0}, std::nullopt};
  const ex::Image img2 = ex::line_plot({c, d});
  EXPECT_FALSE(ex::palette_color(0) == ex::palette_color(1));
  EXPECT_GT(count_color(img2, ex::palette_color(0)), 100);
  EXPECT_GT(count_color(img2, ex::palette_color(1)), 100);
  ex::write_png(img, tmp_path("example_common_plot.png"));
}

TEST(ExamplePlot, NanLeavesAGap) {
  std::vector<double> xs, ys, ys_gap;
  for (int i = 0; i < 21; ++i) {
    xs.push_back(i);
    ys.push_back(1.0 + 0.01 * i);
    ys_gap.push_back(i >= 9 && i <= 11 ? std::numeric_limits<double>::quiet_NaN() : 1.0 + 0.01 * i);
  }
  ex::PlotOptions o;
  o.legend = false;
  o.line_width = 1;
  const ex::Image full = ex::line_plot({{"s", xs, ys, kRed}}, o);
  const ex::Image gap = ex::line_plot({{"s", xs, ys_gap, kRed}}, o);
  int first = -1, last = -1;
  for (int x = 0; x < full.width; ++x)
    if (count_color_in_column(full, x, kRed) > 0) {
      if (first < 0) first = x;
      last = x;
    }
  ASSERT_GT(last - first, 200);
  // The continuous curve covers every column from first to last ...
  for (int x = first; x <= last; ++x) ASSERT_GT(count_color_in_column(full, x, kRed), 0) << x;
  // ... the one with a NaN gap misses a block in the middle (x = 8..12 lie 4/20 of the width apart).
  int missing = 0;
  for (int x = first; x <= last; ++x) missing += count_color_in_column(gap, x, kRed) == 0;
  const int expected = (last - first) * 4 / 20;
  EXPECT_GE(missing, expected - 2);
  EXPECT_LE(missing, expected + 2);
  const int mid = (first + last) / 2;
  EXPECT_EQ(count_color_in_column(gap, mid, kRed), 0);
  EXPECT_GT(count_color_in_column(gap, first + 5, kRed), 0);
  EXPECT_GT(count_color_in_column(gap, last - 5, kRed), 0);
}

TEST(ExamplePlot, SinglePointConstantAndEmptySeries) {
  ex::PlotOptions o;
  o.legend = false;
  // A single point becomes a visible marker.
  const ex::Image one = ex::line_plot({{"p", {3.0}, {7.0}, kRed}}, o);
  EXPECT_GE(count_color(one, kRed), 9);
  // A constant series is a horizontal line: its pixels lie in line_width rows.
  const ex::Image flat = ex::line_plot({{"c", {0, 1, 2, 3}, {5, 5, 5, 5}, kRed}}, o);
  int rows = 0;
  for (int y = 0; y < flat.height; ++y) {
    int n = 0;
    for (int x = 0; x < flat.width; ++x) n += flat.get_pixel(x, y) == kRed;
    rows += n > 0;
  }
  EXPECT_EQ(rows, o.line_width);
  EXPECT_GT(count_color(flat, kRed), 300);
  // Series with no finite points draw nothing but still get axes.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const ex::Image empty = ex::line_plot({{"e", {}, {}, kRed}, {"n", {0, 1}, {nan, nan}, kBlue}}, o);
  EXPECT_EQ(count_color(empty, kRed), 0);
  EXPECT_EQ(count_color(empty, kBlue), 0);
  EXPECT_GT(longest_run(empty, ex::colors::black, true), empty.height / 2);
  // Errors.
  EXPECT_THROW(ex::line_plot({}, o), cugrad::ValueError);
  EXPECT_NE(error_of([&] { ex::line_plot({{"bad", {0, 1}, {0}, kRed}}, o); }).find("bad"), std::string::npos);
  ex::PlotOptions tiny;
  tiny.width = 50;
  EXPECT_THROW(ex::line_plot({{"p", {0}, {0}, kRed}}, tiny), cugrad::ValueError);
  ex::PlotOptions inverted;
  inverted.y_min = 2;
  inverted.y_max = 1;
  EXPECT_THROW(ex::line_plot({{"p", {0}, {0}, kRed}}, inverted), cugrad::ValueError);
}

TEST(ExamplePlot, LogScaleAndLimits) {
  ex::PlotOptions o;
  o.log_y = true;
  o.legend = false;
  // Non-positive values become gaps; the rest is drawn.
  const ex::Image img = ex::line_plot({{"l", {0, 1, 2, 3, 4}, {1000, 100, 0, 1, 0.1}, kRed}}, o);
  EXPECT_GT(count_color(img, kRed), 100);
  // Points outside explicit limits are clipped to the plot area (no crash, no stray pixels
  // in the margins).
  ex::PlotOptions lim;
  lim.legend = false;
  lim.y_min = 0;
  lim.y_max = 1;
  const ex::Image clipped = ex::line_plot({{"c", {0, 1, 2}, {-1e9, 0.5, 1e9}, kRed}}, lim);
  for (int x = 0; x < clipped.width; ++x) {
    EXPECT_FALSE(clipped.get_pixel(x, 0) == kRed);
    EXPECT_FALSE(clipped.get_pixel(x, clipped.height - 1) == kRed);
  }
  EXPECT_GT(count_color(clipped, kRed), 50);
}

TEST(ExamplePlot, TickLabels) {
  EXPECT_EQ(ex::format_tick(0.25, 0.05), "0.25");
  EXPECT_EQ(ex::format_tick(1500, 500), "1500");
  EXPECT_EQ(ex::format_tick(2, 0.5), "2.0");
  EXPECT_EQ(ex::format_tick(1e-9, 0.5), "0");
  EXPECT_EQ(ex::format_tick(1e-5, 1e-5), "1e-05");
  EXPECT_EQ(ex::format_tick(-3, 1), "-3");
}

// ---- histograms ----

TEST(ExampleHistogram, BarHeightsAreProportional) {
  const std::vector<std::int64_t> counts = {10, 20, 40, 0, 30};
  ex::PlotOptions o;
  o.width = 520;
  o.height = 360;
  const ex::Image img = ex::bar_histogram(counts, 0.0, 5.0, "weights", o);
  ASSERT_EQ(img.width, 520);
  ASSERT_EQ(img.height, 360);
  // Group the columns holding bar pixels into bars; each column's bar-pixel count is its height.
  std::vector<std::pair<int, int>> bars;  // (first column, height)
  std::vector<int> widths;
  int prev = 0;
  for (int x = 0; x < img.width; ++x) {
    const int h = count_color_in_column(img, x, o.bar_color);
    if (h > 0 && prev == 0) {
      bars.push_back({x, h});
      widths.push_back(0);
    }
    if (h > 0) {
      EXPECT_EQ(h, bars.back().second) << "bar at column " << bars.back().first << " is not flat";
      ++widths.back();
    }
    prev = h;
  }
  ASSERT_EQ(bars.size(), 4u);  // the empty bin has no bar
  const double per_count = bars[2].second / 40.0;
  EXPECT_GT(per_count, 3.0);
  EXPECT_NEAR(bars[0].second, 10 * per_count, 1.0);
  EXPECT_NEAR(bars[1].second, 20 * per_count, 1.0);
  EXPECT_NEAR(bars[3].second, 30 * per_count, 1.0);
  // Equal bin widths, and the gap for the empty bin: bar 4 starts two bins after bar 3.
  for (int w : widths) EXPECT_NEAR(w, widths[0], 1);
  const double bin = bars[1].first - bars[0].first;
  EXPECT_NEAR(bars[3].first - bars[2].first, 2 * bin, 1.0);
  // Errors.
  EXPECT_THROW(ex::bar_histogram({}, 0, 1, "t"), cugrad::ValueError);
  EXPECT_THROW(ex::bar_histogram({1, -1}, 0, 1, "t"), cugrad::ValueError);
  EXPECT_THROW(ex::bar_histogram({1}, 2, 1, "t"), cugrad::ValueError);
  EXPECT_THROW(ex::bar_histogram({1}, 0, std::numeric_limits<double>::infinity(), "t"), cugrad::ValueError);
  // lo == hi (a constant tensor): drawn over a widened range, the bar still shows.
  EXPECT_GT(count_color(ex::bar_histogram({5}, 0.5, 0.5, "const"), o.bar_color), 100);
  // All-zero counts: an empty chart, no error.
  EXPECT_EQ(count_color(ex::bar_histogram({0, 0}, 0, 1, ""), o.bar_color), 0);
}

// ---- image grids ----

TEST(ExampleGrid, DimensionsAndCellPixels) {
  ex::GridCell orig;
  orig.width = 4;
  orig.height = 3;
  for (int i = 0; i < 12; ++i) orig.values.push_back(i / 11.0f);
  orig.lo = 0.0f;
  orig.hi = 1.0f;
  orig.caption = "7 (orig)";
  ex::GridCell pert;
  pert.width = 4;
  pert.height = 3;
  pert.values.assign(12, 0.0f);
  pert.values[5] = 0.1f;
  pert.values[6] = -0.1f;
  pert.caption = "noise";  // auto range: -0.1 black, 0.1 white
  ex::GridCell rgb;
  rgb.width = 2;
  rgb.height = 2;
  rgb.channels = 3;
  rgb.values = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0};  // pure red
  rgb.caption = "pred: 3\np=0.98";
  ex::GridOptions o;
  o.scale = 5;
  o.padding = 6;
  const ex::Image img = ex::image_grid({{orig, pert}, {rgb}}, o);

  const int col0 = std::max(4 * 5, ex::text_width(orig.caption));
  const int col1 = std::max(4 * 5, ex::text_width(pert.caption));
  EXPECT_EQ(img.width, 6 + col0 + 6 + col1 + 6);
  const int row0 = 3 * 5 + 3 + ex::text_height("x");
  const int row1 = 2 * 5 + 3 + ex::text_height(rgb.caption);
  EXPECT_EQ(img.height, 6 + row0 + 6 + row1 + 6);

  // Cell (0, 0): each value is a 5x5 block of gray round(v * 255).
  const int x0 = 6 + (col0 - 20) / 2, y0 = 6;
  for (int sy = 0; sy < 3; ++sy)
    for (int sx = 0; sx < 4; ++sx) {
      const auto g = static_cast<std::uint8_t>(std::lround((sy * 4 + sx) / 11.0 * 255.0));
      for (int k = 0; k < 5; ++k)
        ASSERT_EQ(img.get_pixel(x0 + sx * 5 + k, y0 + sy * 5 + (4 - k)), (ex::Rgb{g, g, g}))
            << "value (" << sy << ", " << sx << ")";
    }
  // Cell (0, 1): auto range maps 0 to mid gray, the extremes to white and black.
  const int x1 = 6 + col0 + 6 + (col1 - 20) / 2;
  EXPECT_EQ(img.get_pixel(x1 + 1 * 5 + 2, y0 + 1 * 5 + 2), ex::colors::white);
  EXPECT_EQ(img.get_pixel(x1 + 2 * 5 + 2, y0 + 1 * 5 + 2), ex::colors::black);
  EXPECT_EQ(img.get_pixel(x1 + 2, y0 + 2), (ex::Rgb{128, 128, 128}));
  // Cell (1, 0): RGB planes.
  const int y2 = 6 + row0 + 6;
  const int col0_rgb = col0;  // the first column is shared by both rows
  EXPECT_EQ(img.get_pixel(6 + (col0_rgb - 10) / 2 + 3, y2 + 3), (ex::Rgb{255, 0, 0}));
  // Captions put ink under the cells.
  ex::Image caption_band(img.width, ex::text_height("x"));
  caption_band.blit(img, 0, -(6 + 15 + 3));
  EXPECT_GT(ink(caption_band, ex::colors::white).count, 30);

  // Aggregate initialisation in field order, and the scale-only overload.
  const ex::Image small = ex::image_grid({{ex::GridCell{4, 3, orig.values, 0.0f, 1.0f, "x"}}}, 2);
  EXPECT_EQ(small.width, 6 + 8 + 6);
  EXPECT_EQ(small.get_pixel(6 + 3 * 2, 6 + 2 * 2), ex::colors::white);  // value 11/11

  // Errors.
  EXPECT_THROW(ex::image_grid({}), cugrad::ValueError);
  ex::GridCell bad = orig;
  bad.values.pop_back();
  EXPECT_THROW(ex::image_grid({{bad}}), cugrad::ValueError);
  ex::write_png(img, tmp_path("example_common_grid.png"));
}

// ---- CSV ----

TEST(ExampleCsv, QuotesPerRfc4180) {
  const std::string path = tmp_path("example_common.csv");
  {
    ex::CsvWriter csv(path, {"name", "value", "note, with comma"});
    csv.write_row({"a,b", 1.5, "say \"hi\""});
    // Each row is flushed: the file is readable before the writer goes away.
    EXPECT_EQ(read_file(path), "name,value,\"note, with comma\"\n\"a,b\",1.5,\"say \"\"hi\"\"\"\n");
    csv.write_row({"line1\nline2", std::int64_t{42}, ""});
    csv.write_row({std::string("plain"), std::size_t{7}, 0.1f});
    csv.row({"x", std::numeric_limits<double>::quiet_NaN(), 1e-7});
    EXPECT_EQ(csv.rows_written(), 4u);
  }
  EXPECT_EQ(read_file(path),
            "name,value,\"note, with comma\"\n"
            "\"a,b\",1.5,\"say \"\"hi\"\"\"\n"
            "\"line1\nline2\",42,\n"
            "plain,7,0.1\n"
            "x,nan,1e-07\n");
  EXPECT_EQ(ex::csv_escape("cr\rhere"), "\"cr\rhere\"");
  EXPECT_EQ(ex::csv_escape("  spaces  "), "  spaces  ");
}

TEST(ExampleCsv, WrongColumnCountAndOpenFailure) {
  const std::string path = tmp_path("example_common_cols.csv");
  ex::CsvWriter csv(path, {"a", "b", "c"});
  EXPECT_EQ(csv.columns(), 3u);
  const std::string msg = error_of([&] { csv.write_row({1, 2}); });
  EXPECT_NE(msg.find("3 columns"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 fields"), std::string::npos) << msg;
  EXPECT_THROW(csv.write_row({1, 2, 3, 4}), cugrad::ValueError);
  EXPECT_EQ(read_file(path), "a,b,c\n");  // nothing half-written
  csv.write_row({1, 2, 3});
  csv.close();
  csv.close();
  EXPECT_THROW(csv.write_row({1, 2, 3}), cugrad::Error);
  EXPECT_EQ(read_file(path), "a,b,c\n1,2,3\n");

  const std::string bad = "/nonexistent-dir-cugrad/m.csv";
  EXPECT_NE(error_of([&] { ex::CsvWriter w(bad, {"a"}); }).find(bad), std::string::npos);
  EXPECT_THROW(ex::CsvWriter(tmp_path("x.csv"), {}), cugrad::ValueError);
}

// ---- progress bar ----

namespace {
struct FakeClock {
  std::chrono::steady_clock::time_point t{};
  ex::ProgressOptions::Clock fn() {
    return [this] { return t; };
  }
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
}  // namespace

TEST(ExampleProgress, NonTtyPrintsOneLinePerTenPercent) {
  std::ostringstream os;
  FakeClock clock;
  ex::ProgressOptions opt;
  opt.out = &os;
  opt.tty = false;
  opt.clock = clock.fn();
  {
    ex::ProgressBar bar(250, "epoch 1", opt);
    EXPECT_FALSE(bar.is_tty());
    for (int i = 1; i <= 250; ++i) {
      clock.t += std::chrono::milliseconds(4);
      bar.update(i, {{"loss", 2.5 - i * 0.001}, {"acc", 0.5}, {"images/s", 2345.25}});
    }
    bar.finish({{"loss", 0.125}, {"acc", 0.9375}, {"images/s", 2345.25}});
    bar.finish();  // no second line
  }
  const std::string out = os.str();
  EXPECT_EQ(out.find('\r'), std::string::npos);
  const auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 10u) << out;  // 10%, ..., 90%, then finish
  EXPECT_NE(lines[0].find("epoch 1"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(" 25/250"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(" 10%"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("loss=2.475"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("images/s=2345"), std::string::npos) << lines[0];
  EXPECT_NE(lines[8].find(" 90%"), std::string::npos) << lines[8];
  EXPECT_NE(lines[9].find("250/250"), std::string::npos) << lines[9];
  EXPECT_NE(lines[9].find("100%"), std::string::npos) << lines[9];
  EXPECT_NE(lines[9].find("loss=0.125 acc=0.9375"), std::string::npos) << lines[9];
  EXPECT_NE(lines[9].find("00:01"), std::string::npos) << lines[9];  // 250 x 4 ms elapsed
}

TEST(ExampleProgress, TtyRedrawsInPlaceAtMostTenTimesASecond) {
  std::ostringstream os;
  FakeClock clock;
  ex::ProgressOptions opt;
  opt.out = &os;
  opt.tty = true;
  opt.clock = clock.fn();
  opt.min_interval = std::chrono::milliseconds(100);
  ex::ProgressBar bar(1000, "train", opt);
  for (int i = 1; i <= 1000; ++i) {
    clock.t += std::chrono::milliseconds(1);  // one second in all
    bar.update(i, {{"loss", 1.0}});
  }
  const std::string before = os.str();
  EXPECT_EQ(before.find('\n'), std::string::npos);  // in place until finish
  const auto redraws = std::count(before.begin(), before.end(), '\r');
  EXPECT_GE(redraws, 10);
  EXPECT_LE(redraws, 12);
  bar.finish();
  const std::string after = os.str();
  EXPECT_EQ(after.back(), '\n');
  EXPECT_NE(after.substr(after.rfind('\r')).find("1000/1000"), std::string::npos);
  EXPECT_THROW(bar.update(5), cugrad::ValueError);

  // max_width cuts every redrawn line so that it cannot wrap.
  std::ostringstream narrow;
  opt.out = &narrow;
  opt.max_width = 20;
  {
    ex::ProgressBar small(10, "a long label here", opt);
    for (int i = 1; i <= 10; ++i) {
      clock.t += std::chrono::milliseconds(500);
      small.update(i, {{"loss", 1.0}});
    }
  }
  const std::string text = narrow.str();
  std::size_t pos = 0, segments = 0;
  while ((pos = text.find('\r', pos)) != std::string::npos) {
    const std::size_t end = text.find_first_of("\r\n", pos + 1);
    EXPECT_LE((end == std::string::npos ? text.size() : end) - pos - 1, 20u);
    ++segments;
    ++pos;
  }
  EXPECT_EQ(segments, 11u);  // 10 updates 500 ms apart, then the final line
}

TEST(ExampleProgress, UnknownTotalAndFormatting) {
  std::ostringstream os;
  ex::ProgressOptions opt;
  opt.out = &os;
  opt.tty = false;
  {
    ex::ProgressBar bar(0, "scan", opt);
    for (int i = 1; i <= 100; ++i) bar.update(i);
    EXPECT_EQ(os.str(), "");
  }  // the destructor finishes
  const auto lines = lines_of(os.str());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].rfind("scan 100 ", 0), 0u) << lines[0];
  EXPECT_EQ(ex::format_metric(0.91234), "0.9123");
  EXPECT_EQ(ex::format_metric(2.302585), "2.303");
  EXPECT_EQ(ex::format_metric(12345.6), "12346");
  EXPECT_EQ(ex::format_metric(1.234e-5), "1.23e-05");
  EXPECT_EQ(ex::format_metric(0), "0");
  EXPECT_THROW(ex::ProgressBar(-1, "x", opt), cugrad::ValueError);
}

// ---- stopwatch ----

TEST(ExampleStopwatch, MeasuresWallTime) {
  ex::Stopwatch sw;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double t = sw.seconds();
  EXPECT_GE(t, 0.019);
  EXPECT_LT(t, 5.0);
  EXPECT_GE(sw.seconds(), t);
  sw.reset();
  EXPECT_LT(sw.seconds(), t);
}
