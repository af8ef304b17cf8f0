// A terminal progress bar for the example programs: redraws one line in place on a TTY,
// prints at most one line per 10% otherwise (so CI logs stay short).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cugrad::examples {

/// Named values shown after the bar, in order: {{"loss", 0.31}, {"acc", 0.91}}.
using ProgressMetrics = std::vector<std::pair<std::string, double>>;

/// Formats a metric value compactly: 4 significant digits ("0.9123", "2.303"), no decimals
/// from 1000 up ("12346"), scientific below 0.001 ("1.23e-05").
std::string format_metric(double value);

struct ProgressOptions {
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  /// Where the bar is drawn; nullptr means std::cerr.
  std::ostream* out = nullptr;
  /// Whether to redraw in place with '\r'. Unset: true when `out` is std::cerr/std::clog
  /// and stderr is a terminal, or `out` is std::cout and stdout is one.
  std::optional<bool> tty;
  /// In TTY mode, the least time between redraws (the final state is always drawn).
  std::chrono::milliseconds min_interval{100};
  /// The time source (rates, elapsed time, throttling); unset means steady_clock::now.
  Clock clock;
  /// Number of characters in the bar itself.
  int bar_width = 30;
  /// TTY mode: lines are cut to this many characters so that '\r' redraws never wrap;
  /// 0 means the terminal's width minus one when it can be read, else no limit.
  int max_width = 0;
};

/// Shows `label`, a bar, done/total, percent, elapsed time, an estimate of the time left and
/// the latest metrics. total == 0 means an unknown total (no bar, no percentage). Not
/// thread-safe.
///
///   ProgressBar bar(steps, "epoch 1");
///   for (...) bar.update(step + 1, {{"loss", loss}, {"images/s", rate}});
///   bar.finish();
///
/// Without a TTY, update() prints a line only when done/total first reaches the next 10%
/// (10%, 20%, ..., 90%) and finish() prints the final line, so a run prints at most 10 lines.
class ProgressBar {
 public:
  ProgressBar(std::int64_t total, std::string label, ProgressOptions options = {});
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  /// Calls finish() if it was not called (errors swallowed).
  ~ProgressBar();

  /// Records progress (`done` items of `total`; values past total are shown as total) and
  /// the metrics to show, and redraws when the mode's throttle allows. Throws
  /// cugrad::ValueError for done < 0 or after finish().
  void update(std::int64_t done, const ProgressMetrics& metrics = {});
  /// Draws the final state (with `metrics` if not empty, else the last ones) and ends the line.
  /// Calling it again does nothing.
  void finish(const ProgressMetrics& metrics = {});

  /// The line as it would be drawn now (no '\r' or newline).
  std::string render() const;
  bool is_tty() const { return tty_; }
  bool finished() const { return finished_; }

 private:
  std::chrono::steady_clock::time_point now() const;
  void draw(bool final_line);

  std::int64_t total_;
  std::string label_;
  ProgressOptions options_;
  std::ostream* out_;
  bool tty_;
  std::size_t max_width_ = 0;  // 0: no limit
  std::int64_t done_ = 0;
  ProgressMetrics metrics_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  bool drawn_ = false;
  int last_decile_ = 0;
  std::size_t last_length_ = 0;
  bool finished_ = false;
};

}  // namespace cugrad::examples
