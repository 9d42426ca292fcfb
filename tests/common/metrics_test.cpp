#include "common/metrics.h"

#include <catch2/catch.hpp>
#include <thread>
#include <vector>

namespace dsocr {
namespace {

TEST_CASE("Metrics: text exposition of every type", "[metrics]") {
  MetricsRegistry registry;
  auto& requests = registry.counter("dsocr_requests_total", "Requests by status.", {"status"});
  requests.labels({"200"}).inc();
  requests.labels({"200"}).inc(2);
  requests.labels({"400"}).inc();
  registry.gauge("dsocr_running", "Running requests.").labels({}).set(3.5);
  auto& latency = registry.histogram("dsocr_latency_seconds", "Latency.", {}, {0.1, 1});
  latency.labels({}).observe(0.05);
  latency.labels({}).observe(0.5);
  latency.labels({}).observe(7);

  CHECK(registry.render() ==
        "# HELP dsocr_requests_total Requests by status.\n"
        "# TYPE dsocr_requests_total counter\n"
        "dsocr_requests_total{status=\"200\"} 3\n"
        "dsocr_requests_total{status=\"400\"} 1\n"
        "# HELP dsocr_running Running requests.\n"
        "# TYPE dsocr_running gauge\n"
        "dsocr_running 3.5\n"
        "# HELP dsocr_latency_seconds Latency.\n"
        "# TYPE dsocr_latency_seconds histogram\n"
        "dsocr_latency_seconds_bucket{le=\"0.10000000000000001\"} 1\n"
        "dsocr_latency_seconds_bucket{le=\"1\"} 2\n"
        "dsocr_latency_seconds_bucket{le=\"+Inf\"} 3\n"
        "dsocr_latency_seconds_sum 7.5499999999999998\n"
        "dsocr_latency_seconds_count 3\n");
}

TEST_CASE("Metrics: label values and help are escaped", "[metrics]") {
  MetricsRegistry registry;
  registry.counter("x_total", "line one\nback\\slash", {"path"}).labels({"a\"b\\c\nd"}).inc();
  CHECK(registry.render() ==
        "# HELP x_total line one\\nback\\\\slash\n"
        "# TYPE x_total counter\n"
        "x_total{path=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST_CASE("Metrics: registering twice returns the same family", "[metrics]") {
  MetricsRegistry registry;
  auto& a = registry.counter("dup_total", "help", {"k"});
  auto& b = registry.counter("dup_total", "help", {"k"});
  CHECK(&a == &b);
  CHECK(&a.labels({"v"}) == &b.labels({"v"}));
}

TEST_CASE("Metrics: names are validated", "[metrics]") {
  CHECK(is_valid_metric_name("dsocr_ttft_seconds"));
  CHECK(is_valid_metric_name("a:b_c"));
  CHECK_FALSE(is_valid_metric_name("9lives"));
  CHECK_FALSE(is_valid_metric_name("has-dash"));
  CHECK_FALSE(is_valid_metric_name(""));
  CHECK(is_valid_label_name("status"));
  CHECK_FALSE(is_valid_label_name("a:b"));
  CHECK_FALSE(is_valid_label_name("__reserved"));
}

TEST_CASE("Metrics: concurrent updates are all counted", "[metrics][stress]") {
  MetricsRegistry registry;
  auto& counter = registry.counter("c_total", "c", {"t"});
  auto& hist =
      registry.histogram("h_seconds", "h", {}, MetricsRegistry::exponential_bounds(1, 2, 4));
  auto& gauge = registry.gauge("g", "g").labels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        counter.labels({std::to_string(t % 2)}).inc();
        hist.labels({}).observe(i % 10);
        gauge.add(1);
        gauge.add(-1);
      }
    });
  }
  std::string rendered;
  std::thread renderer([&] {
    for (int i = 0; i < 50; ++i) rendered = registry.render();
  });
  for (auto& t : threads) t.join();
  renderer.join();
  CHECK(counter.labels({"0"}).value() == 40000);
  CHECK(counter.labels({"1"}).value() == 40000);
  CHECK(hist.labels({}).count() == 80000);
  CHECK(hist.labels({}).sum() == 8 * 1000 * 45);
  CHECK(gauge.value() == 0);
  // bounds 1,2,4,8: values 0..9 -> <=1: {0,1}, <=2: +{2}, <=4: +{3,4}, <=8: +{5..8}, +Inf: {9}
  CHECK(hist.labels({}).cumulative_count(0) == 8 * 1000 * 2);
  CHECK(hist.labels({}).cumulative_count(3) == 8 * 1000 * 9);
  CHECK(hist.labels({}).cumulative_count(4) == 80000);
}

}  // namespace
}  // namespace dsocr
