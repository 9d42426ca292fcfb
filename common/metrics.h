// A Prometheus metrics registry with text exposition (format 0.0.4), no external dependency.
//
//   MetricsRegistry registry;
//   auto& requests = registry.counter("dsocr_requests_total", "Requests by status", {"status"});
//   requests.labels({"200"}).inc();
//   auto& ttft = registry.histogram("dsocr_ttft_seconds", "Time to first token", {},
//                                   {0.05, 0.1, 0.5, 1, 5});
//   ttft.labels({}).observe(0.2);
//   std::string body = registry.render();   // GET /metrics
//
// A family (name + help + label names) owns one child per distinct label-value tuple. Children
// live as long as the registry and never move, so hot paths keep a reference and update it with
// one atomic operation. Registering a name twice returns the same family if type, help, label
// names (and buckets) agree, and is a check failure otherwise.
//
// Thread-safety: everything may be called concurrently. Updates are lock-free atomics; creating a
// child or rendering takes the family's mutex. A render sees each value atomically, not the whole
// registry at one instant (as Prometheus clients do).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace dsocr {

class Counter {
 public:
  void inc(double amount = 1.0);  // amount >= 0 (checked)
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double amount) { value_.fetch_add(amount, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds`: strictly increasing upper bounds; +Inf is implicit.
  explicit Histogram(const std::vector<double>& bounds);
  void observe(double v);

  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative count of observations <= bounds()[i]; i == bounds().size() is +Inf (== count()).
  uint64_t cumulative_count(size_t i) const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per bucket, not cumulative; +Inf last
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// A named metric and its children, one per label-value tuple.
template <typename Child>
class MetricFamily {
 public:
  // The child for these label values (created on first use). The number of values must equal
  // the number of label names (checked).
  Child& labels(const std::vector<std::string>& values);

 private:
  friend class MetricsRegistry;
  MetricFamily(std::string name, std::string help, std::vector<std::string> label_names,
               std::vector<double> bounds)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Child>> children_;  // guarded by mu_
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  MetricFamily<Counter>& counter(std::string_view name, std::string_view help,
                                 std::vector<std::string> label_names = {});
  MetricFamily<Gauge>& gauge(std::string_view name, std::string_view help,
                             std::vector<std::string> label_names = {});
  MetricFamily<Histogram>& histogram(std::string_view name, std::string_view help,
                                     std::vector<std::string> label_names,
                                     std::vector<double> bounds);

  // The whole registry in Prometheus text format, families in registration order.
  std::string render() const;

  // Bounds growing by `factor` from `start`: {start, start*factor, ...} (count entries).
  static std::vector<double> exponential_bounds(double start, double factor, int count);

 private:
  struct Entry {
    MetricType type;
    std::string name;
    void* family;  // MetricFamily<Counter|Gauge|Histogram>*, per `type`
  };
  template <typename Child>
  MetricFamily<Child>& get_or_add(MetricType type, std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names, std::vector<double> bounds);

  mutable std::mutex mu_;
  std::vector<Entry> entries_;                                        // guarded by mu_
  std::vector<std::unique_ptr<MetricFamily<Counter>>> counters_;      // guarded by mu_
  std::vector<std::unique_ptr<MetricFamily<Gauge>>> gauges_;          // guarded by mu_
  std::vector<std::unique_ptr<MetricFamily<Histogram>>> histograms_;  // guarded by mu_
};

// Valid Prometheus metric or label name ([a-zA-Z_:][a-zA-Z0-9_:]*, no ':' in label names).
bool is_valid_metric_name(std::string_view name);
bool is_valid_label_name(std::string_view name);

}  // namespace dsocr
