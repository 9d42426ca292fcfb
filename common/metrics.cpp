#include "common/metrics.h"

#include <cmath>
#include <cstdio>
#include <type_traits>

#include "common/check.h"

namespace dsocr {
namespace {

// Prometheus float formatting: integers without a fraction, +Inf/-Inf/NaN spelled out, otherwise
// enough digits to round-trip.
void append_value(std::string* out, double v) {
  if (std::isnan(v)) {
    *out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    *out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.17g", v);
  }
  *out += buf;
}

void append_escaped(std::string* out, std::string_view text, bool escape_quotes) {
  for (char c : text) {
    if (c == '\\')
      *out += "\\\\";
    else if (c == '\n')
      *out += "\\n";
    else if (c == '"' && escape_quotes)
      *out += "\\\"";
    else
      out->push_back(c);
  }
}

// {a="x",b="y"} plus an optional extra label (histograms' le); nothing when there are no labels.
void append_labels(std::string* out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out->push_back('{');
  bool first = true;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!first) out->push_back(',');
    first = false;
    *out += names[i];
    *out += "=\"";
    append_escaped(out, values[i], true);
    out->push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out->push_back(',');
    *out += extra_name;
    *out += "=\"";
    *out += extra_value;
    out->push_back('"');
  }
  out->push_back('}');
}

void append_header(std::string* out, const std::string& name, const std::string& help,
                   std::string_view type) {
  *out += "# HELP " + name + " ";
  append_escaped(out, help, false);
  *out += "\n# TYPE " + name + " ";
  *out += type;
  out->push_back('\n');
}

}  // namespace

bool is_valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool is_valid_label_name(std::string_view name) {
  return is_valid_metric_name(name) && name.find(':') == std::string_view::npos &&
         name.substr(0, 2) != "__";
}

void Counter::inc(double amount) {
  DSOCR_CHECK(amount >= 0) << "counters only go up, got " << amount;
  value_.fetch_add(amount, std::memory_order_relaxed);
}

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i + 1 < bounds_.size(); ++i) {
    DSOCR_CHECK_LT(bounds_[i], bounds_[i + 1]) << "histogram bounds must increase";
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  // Buckets are few (tens), a linear scan beats a binary search here.
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

uint64_t Histogram::cumulative_count(size_t i) const {
  DSOCR_CHECK_LE(i, bounds_.size());
  uint64_t total = 0;
  for (size_t b = 0; b <= i; ++b) total += buckets_[b].load(std::memory_order_relaxed);
  return total;
}

template <typename Child>
Child& MetricFamily<Child>::labels(const std::vector<std::string>& values) {
  DSOCR_CHECK_EQ(values.size(), label_names_.size()) << "label values for " << name_;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it != children_.end()) return *it->second;
  std::unique_ptr<Child> child;
  if constexpr (std::is_same_v<Child, Histogram>) {
    child = std::make_unique<Histogram>(bounds_);
  } else {
    child = std::make_unique<Child>();
  }
  Child& ref = *child;
  children_.emplace(values, std::move(child));
  return ref;
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

template <typename Child>
MetricFamily<Child>& MetricsRegistry::get_or_add(MetricType type, std::string_view name,
                                                 std::string_view help,
                                                 std::vector<std::string> label_names,
                                                 std::vector<double> bounds) {
  DSOCR_CHECK(is_valid_metric_name(name)) << "invalid metric name '" << name << "'";
  for (const auto& label : label_names) {
    DSOCR_CHECK(is_valid_label_name(label) && label != "le")
        << "invalid label name '" << label << "' for " << name;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const Entry& e : entries_) {
    if (e.name != name) continue;
    auto* family = static_cast<MetricFamily<Child>*>(e.family);
    DSOCR_CHECK(e.type == type && family->help_ == help && family->label_names_ == label_names &&
                family->bounds_ == bounds)
        << "metric '" << name << "' registered twice with different definitions";
    return *family;
  }
  auto family = std::unique_ptr<MetricFamily<Child>>(new MetricFamily<Child>(
      std::string(name), std::string(help), std::move(label_names), std::move(bounds)));
  MetricFamily<Child>* raw = family.get();
  if constexpr (std::is_same_v<Child, Counter>) counters_.push_back(std::move(family));
  if constexpr (std::is_same_v<Child, Gauge>) gauges_.push_back(std::move(family));
  if constexpr (std::is_same_v<Child, Histogram>) histograms_.push_back(std::move(family));
  entries_.push_back({type, std::string(name), raw});
  return *raw;
}

MetricFamily<Counter>& MetricsRegistry::counter(std::string_view name, std::string_view help,
                                                std::vector<std::string> label_names) {
  return get_or_add<Counter>(MetricType::kCounter, name, help, std::move(label_names), {});
}

MetricFamily<Gauge>& MetricsRegistry::gauge(std::string_view name, std::string_view help,
                                            std::vector<std::string> label_names) {
  return get_or_add<Gauge>(MetricType::kGauge, name, help, std::move(label_names), {});
}

MetricFamily<Histogram>& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                                    std::vector<std::string> label_names,
                                                    std::vector<double> bounds) {
  DSOCR_CHECK(!bounds.empty()) << "histogram '" << name << "' needs at least one bound";
  return get_or_add<Histogram>(MetricType::kHistogram, name, help, std::move(label_names),
                               std::move(bounds));
}

std::vector<double> MetricsRegistry::exponential_bounds(double start, double factor, int count) {
  DSOCR_CHECK(start > 0 && factor > 1 && count > 0);
  std::vector<double> bounds;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) bounds.push_back(v);
  return bounds;
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const Entry& e : entries_) {
    switch (e.type) {
      case MetricType::kCounter:
      case MetricType::kGauge: {
        bool is_counter = e.type == MetricType::kCounter;
        // Counter and Gauge share the render path; only the child type differs.
        auto render_simple = [&](const auto& family) {
          append_header(&out, family.name_, family.help_, is_counter ? "counter" : "gauge");
          std::lock_guard<std::mutex> family_lock(family.mu_);
          for (const auto& [values, child] : family.children_) {
            out += family.name_;
            append_labels(&out, family.label_names_, values);
            out.push_back(' ');
            append_value(&out, child->value());
            out.push_back('\n');
          }
        };
        if (is_counter)
          render_simple(*static_cast<const MetricFamily<Counter>*>(e.family));
        else
          render_simple(*static_cast<const MetricFamily<Gauge>*>(e.family));
        break;
      }
      case MetricType::kHistogram: {
        const auto& family = *static_cast<const MetricFamily<Histogram>*>(e.family);
        append_header(&out, family.name_, family.help_, "histogram");
        std::lock_guard<std::mutex> family_lock(family.mu_);
        for (const auto& [values, h] : family.children_) {
          for (size_t i = 0; i <= h->bounds().size(); ++i) {
            std::string le;
            if (i == h->bounds().size())
              le = "+Inf";
            else
              append_value(&le, h->bounds()[i]);
            out += family.name_ + "_bucket";
            append_labels(&out, family.label_names_, values, "le", le);
            out.push_back(' ');
            append_value(&out, static_cast<double>(h->cumulative_count(i)));
            out.push_back('\n');
          }
          out += family.name_ + "_sum";
          append_labels(&out, family.label_names_, values);
          out.push_back(' ');
          append_value(&out, h->sum());
          out += "\n" + family.name_ + "_count";
          append_labels(&out, family.label_names_, values);
          out.push_back(' ');
          // The +Inf bucket, so that _count and it agree even while observations race the render.
          append_value(&out, static_cast<double>(h->cumulative_count(h->bounds().size())));
          out.push_back('\n');
        }
        break;
      }
    }
  }
  return out;
}

}  // namespace dsocr
