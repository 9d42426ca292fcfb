#include "engine/device.h"

#include <catch2/catch.hpp>

namespace dsocr::engine {
namespace {

TEST_CASE("probe_devices reports the linked libtorch", "[device]") {
  DeviceInfo info = probe_devices();
  CHECK(info.torch_version.rfind("2.11", 0) == 0);  // requirements.txt pins torch 2.11
  CHECK(info.intra_op_threads >= 1);
  CHECK_FALSE(info.summary().empty());
}

TEST_CASE("resolve_device", "[device]") {
  DeviceInfo cpu_only;
  CHECK(resolve_device("auto", cpu_only).value() == "cpu");
  CHECK(resolve_device("cpu", cpu_only).value() == "cpu");
  CHECK(resolve_device("cuda", cpu_only).status().code() == StatusCode::kFailedPrecondition);
  CHECK(resolve_device("tpu", cpu_only).status().code() == StatusCode::kInvalidArgument);
  CHECK(resolve_device("cuda:x", cpu_only).status().code() == StatusCode::kInvalidArgument);
  DeviceInfo two_gpus;
  two_gpus.cuda_devices = {{.index = 0, .name = "A"}, {.index = 1, .name = "B"}};
  CHECK(resolve_device("auto", two_gpus).value() == "cuda:0");
  CHECK(resolve_device("cuda", two_gpus).value() == "cuda:0");
  CHECK(resolve_device("cuda:1", two_gpus).value() == "cuda:1");
  CHECK_FALSE(resolve_device("cuda:2", two_gpus).ok());
}

}  // namespace
}  // namespace dsocr::engine
