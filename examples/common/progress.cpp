// ProgressBar: line rendering, TTY detection, the redraw throttle (TTY) and the 10% steps
// (logs).
#include "examples/common/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cugrad/error.h"

namespace cugrad::examples {
namespace {

// "07:05" below an hour, "1:02:03" from an hour up.
std::string format_duration(double seconds) {
  if (!(seconds >= 0.0) || !std::isfinite(seconds)) return "--:--";
  const auto total = static_cast<long long>(seconds + 0.5);
  const long long h = total / 3600, m = (total / 60) % 60, s = total % 60;
  std::ostringstream os;
  os << std::setfill('0');
  if (h > 0) os << h << ':' << std::setw(2) << m;
  else os << std::setw(2) << m;
  os << ':' << std::setw(2) << s;
  return os.str();
}

}  // namespace

std::string format_metric(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  std::ostringstream os;
  const double mag = std::abs(value);
  if (mag >= 1000.0)
    os << std::fixed << std::setprecision(0) << value;
  else if (mag >= 1e-3 || value == 0.0)
    os << std::setprecision(4) << value;
  else
    os << std::setprecision(3) << value;  // %g picks scientific here
  return os.str();
}

ProgressBar::ProgressBar(std::int64_t total, std::string label, ProgressOptions options)
    : total_(total), label_(std::move(label)), options_(std::move(options)) {
  CUGRAD_CHECK(total >= 0, "ProgressBar: total must be >= 0 (0 = unknown), got ", total);
  CUGRAD_CHECK(options_.bar_width >= 1, "ProgressBar: bar_width must be >= 1, got ", options_.bar_width);
  CUGRAD_CHECK(options_.max_width >= 0, "ProgressBar: max_width must be >= 0, got ", options_.max_width);
  out_ = options_.out ? options_.out : &std::cerr;
  int fd = -1;  // the descriptor behind out_, when it is a standard stream
  if (out_ == &std::cerr || out_ == &std::clog)
    fd = ::fileno(stderr);
  else if (out_ == &std::cout)
    fd = ::fileno(stdout);
  tty_ = options_.tty ? *options_.tty : (fd >= 0 && ::isatty(fd) != 0);
  if (options_.max_width > 0) {
    max_width_ = static_cast<std::size_t>(options_.max_width);
  } else if (tty_ && fd >= 0) {
    winsize ws{};
    if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) max_width_ = ws.ws_col - 1u;
  }
  start_ = now();
  last_draw_ = start_;
}

ProgressBar::~ProgressBar() {
  if (finished_) return;
  try {
    finish();
  } catch (...) {
  }
}

std::chrono::steady_clock::time_point ProgressBar::now() const {
  return options_.clock ? options_.clock() : std::chrono::steady_clock::now();
}

std::string ProgressBar::render() const {
  std::ostringstream os;
  if (!label_.empty()) os << label_ << ' ';
  const std::int64_t shown = total_ > 0 ? std::min(done_, total_) : done_;
  const double elapsed = std::chrono::duration<double>(now() - start_).count();
  if (total_ > 0) {
    const double frac = static_cast<double>(shown) / static_cast<double>(total_);
    const int filled = static_cast<int>(frac * options_.bar_width);
    os << '[' << std::string(static_cast<std::size_t>(filled), '#')
       << std::string(static_cast<std::size_t>(options_.bar_width - filled), '.') << "] ";
    const std::string total_text = std::to_string(total_);
    os << std::setw(static_cast<int>(total_text.size())) << shown << '/' << total_text << ' '
       << std::setw(3) << static_cast<int>(frac * 100.0) << "% " << format_duration(elapsed);
    if (shown > 0 && shown < total_)
      os << " eta " << format_duration(elapsed * static_cast<double>(total_ - shown) / static_cast<double>(shown));
  } else {
    os << shown << ' ' << format_duration(elapsed);
  }
  for (const auto& [name, value] : metrics_) os << ' ' << name << '=' << format_metric(value);
  return os.str();
}

void ProgressBar::draw(bool final_line) {
  std::string line = render();
  if (tty_ && max_width_ > 0 && line.size() > max_width_) line.resize(max_width_);
  if (tty_) {
    *out_ << '\r' << line;
    if (line.size() < last_length_) *out_ << std::string(last_length_ - line.size(), ' ');
    if (final_line) *out_ << '\n';
  } else {
    *out_ << line << '\n';
  }
  out_->flush();
  last_length_ = line.size();
  last_draw_ = now();
  drawn_ = true;
}

void ProgressBar::update(std::int64_t done, const ProgressMetrics& metrics) {
  CUGRAD_CHECK(!finished_, "ProgressBar::update: '", label_, "' was already finished");
  CUGRAD_CHECK(done >= 0, "ProgressBar::update: done must be >= 0, got ", done);
  done_ = done;
  if (!metrics.empty()) metrics_ = metrics;
  if (tty_) {
    const bool complete = total_ > 0 && done_ >= total_;
    if (!drawn_ || complete || now() - last_draw_ >= options_.min_interval) draw(false);
    return;
  }
  if (total_ <= 0) return;  // unknown total: only finish() prints
  const int decile = static_cast<int>(std::min<std::int64_t>(10, done_ * 10 / total_));
  if (decile > last_decile_) {
    last_decile_ = decile;
    if (decile < 10) draw(false);  // 100% is finish()'s line
  }
}

void ProgressBar::finish(const ProgressMetrics& metrics) {
  if (finished_) return;
  if (!metrics.empty()) metrics_ = metrics;
  finished_ = true;
  draw(true);
}

}  // namespace cugrad::examples
