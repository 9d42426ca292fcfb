#include "weights/safetensors.h"

#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace dsocr::weights {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() /
                  ("dsocr-st-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// A file with a hand-written header, for the bad-input cases.
std::string file_with_header(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + std::string(data_bytes, '\x01');
}

TEST_CASE("safetensors: every dtype round-trips, zero-copy", "[safetensors]") {
  TempDir dir;
  std::map<std::string, at::Tensor> tensors;
  for (auto type : {at::kBool, at::kByte, at::kChar, at::kShort, at::kInt, at::kLong, at::kHalf,
                    at::kBFloat16, at::kFloat, at::kDouble, at::kUInt16, at::kUInt32, at::kUInt64,
                    at::kFloat8_e4m3fn, at::kFloat8_e5m2}) {
    at::Tensor t = (at::rand({3, 5}) * 10).to(type);
    tensors[std::string("t_") + c10::toString(type)] = t;
  }
  tensors["empty"] = at::empty({0, 4});
  tensors["scalar"] = at::tensor(3.5);
  REQUIRE(write_safetensors(dir.path / "a.safetensors", tensors, {{"format", "pt"}}).ok());

  auto file = SafetensorsFile::open(dir.path / "a.safetensors");
  REQUIRE(file.ok());
  CHECK((*file)->header().metadata.at("format") == "pt");
  CHECK((*file)->header().data_start % 8 == 0);  // the header is padded: data starts aligned
  for (const auto& [name, expected] : tensors) {
    auto t = (*file)->tensor(name);
    REQUIRE(t.ok());
    CHECK(t->scalar_type() == expected.scalar_type());
    CHECK(t->sizes() == expected.sizes());
    CHECK(at::equal(t->view(at::kByte), expected.contiguous().view(at::kByte)));
  }
  // Zero-copy: two aligned tensors sit in the mapping exactly as far apart as their offsets
  // (tensors misaligned for their dtype, like some above, are copied and still compare equal).
  REQUIRE(
      write_safetensors(dir.path / "b.safetensors", {{"x", at::ones({5})}, {"y", at::ones({3})}})
          .ok());
  auto aligned = SafetensorsFile::open(dir.path / "b.safetensors");
  REQUIRE(aligned.ok());
  auto tx = (*aligned)->tensor("x"), ty = (*aligned)->tensor("y");
  CHECK(static_cast<const char*>(ty->data_ptr()) - static_cast<const char*>(tx->data_ptr()) == 20);
  // A view outlives the file object that made it (it owns the mapping).
  at::Tensor survivor = *(*file)->tensor("t_Float");
  file = SafetensorsFile::open(dir.path / "a.safetensors");  // drop the first file object
  CHECK(at::equal(survivor, tensors["t_Float"]));
}

TEST_CASE("safetensors: bad files are clear errors, never crashes", "[safetensors]") {
  TempDir dir;
  auto open_bytes = [&](const std::string& bytes) {
    write_file(dir.path / "bad.safetensors", bytes);
    return SafetensorsFile::open(dir.path / "bad.safetensors").status();
  };
  const std::string good = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(open_bytes(file_with_header(good, 8)).ok());

  auto check = [&](const std::string& bytes, StatusCode code, const std::string& needle) {
    Status s = open_bytes(bytes);
    INFO(s.to_string());
    CHECK(s.code() == code);
    CHECK(s.message().find(needle) != std::string::npos);
    CHECK(s.message().find("bad.safetensors") != std::string::npos);
  };
  check("", StatusCode::kDataLoss, "too short");
  check(file_with_header(good, 8).substr(0, 20), StatusCode::kDataLoss, "larger than the file");
  check(file_with_header(good, 4), StatusCode::kDataLoss, "outside");  // truncated data
  check(file_with_header("{not json", 0), StatusCode::kDataLoss, "not a JSON object");
  check(file_with_header(R"({"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8),
        StatusCode::kInvalidArgument, "unknown dtype 'Q4'");
  check(file_with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
        StatusCode::kDataLoss, "tensor 'x': 8 bytes do not hold");
  check(file_with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                             "y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12),
        StatusCode::kDataLoss, "overlaps");
  check(file_with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
        StatusCode::kDataLoss, "gap");
  check(file_with_header(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
        StatusCode::kDataLoss, "non-natural");
  check(file_with_header(R"({"x":{"dtype":"F32","shape":[2]}})", 8), StatusCode::kDataLoss,
        "needs dtype, shape and data_offsets");
  std::string huge(8, '\xff');
  check(huge, StatusCode::kDataLoss, "100 MiB");
  CHECK(SafetensorsFile::open(dir.path / "missing.safetensors").status().code() ==
        StatusCode::kNotFound);
}

int64_t rss_file_bytes() {  // file-backed resident memory of this process
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  return -1;
}

TEST_CASE("StateDict: releasing a copied tensor's pages drops them and keeps every view right",
          "[safetensors]") {
  TempDir dir;
  // Three tensors back to back: the middle one is 32 MiB, its neighbours share its edge pages.
  const at::Tensor small_a = at::arange(1000, at::kFloat);
  const at::Tensor big = at::arange(8 << 20, at::kFloat);
  const at::Tensor small_b = at::arange(777, at::kFloat) * 3;
  REQUIRE(write_safetensors(dir.path / "m.safetensors",
                            {{"a", small_a}, {"b", big}, {"c", small_b}})
              .ok());
  auto state = StateDict::open(dir.path / "m.safetensors");
  REQUIRE(state.ok());
  const at::Tensor a = *state->get("a"), b = *state->get("b"), c = *state->get("c");
  const int64_t before = rss_file_bytes();
  REQUIRE(b.sum().item<double>() == big.sum().item<double>());  // touches b's pages
  const int64_t touched = rss_file_bytes();
  state->release_pages(b);
  const int64_t released = rss_file_bytes();
  if (before >= 0) {
    CHECK(touched - before > (24 << 20));
    CHECK(touched - released > (24 << 20));
  }
  // Every view still reads the file's values: b's pages come back from the file, the edge pages
  // a and c share with b were never dropped.
  CHECK(at::equal(a, small_a));
  CHECK(at::equal(c, small_b));
  CHECK(at::equal(b, big));
  // A tensor that is not a view of the checkpoint is left alone.
  const at::Tensor copy = big.clone();
  state->release_pages(copy);
  CHECK(at::equal(copy, big));
}

TEST_CASE("StateDict: sharded checkpoints through the index", "[safetensors]") {
  TempDir dir;
  REQUIRE(write_safetensors(dir.path / "s1.safetensors", {{"a", at::ones({2})}}).ok());
  REQUIRE(write_safetensors(dir.path / "s2.safetensors", {{"b", at::zeros({3})}}).ok());
  nlohmann::json index = {{"metadata", {{"total_size", 20}}},
                          {"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}};
  write_file(dir.path / "model.safetensors.index.json", index.dump());
  auto sd = StateDict::open(dir.path);
  REQUIRE(sd.ok());
  CHECK(sd->names() == std::vector<std::string>{"a", "b"});
  CHECK(at::equal(*sd->get("b"), at::zeros({3})));
  CHECK(sd->metadata().at("total_size") == "20");
  CHECK(sd->get("c").status().code() == StatusCode::kNotFound);

  index["weight_map"]["c"] = "s3.safetensors";  // a missing shard
  write_file(dir.path / "model.safetensors.index.json", index.dump());
  CHECK(StateDict::open(dir.path).status().message().find("s3.safetensors") != std::string::npos);
  index["weight_map"].erase("c");
  index["weight_map"]["z"] = "s1.safetensors";  // listed but not in its shard
  write_file(dir.path / "model.safetensors.index.json", index.dump());
  CHECK(StateDict::open(dir.path).status().message().find("'z'") != std::string::npos);
  index["weight_map"]["z"] = "../s1.safetensors";
  write_file(dir.path / "model.safetensors.index.json", index.dump());
  CHECK(StateDict::open(dir.path).status().message().find("leaves the directory") !=
        std::string::npos);
}

TEST_CASE("SafetensorsWriter: streams in declared order and checks it", "[safetensors]") {
  TempDir dir;
  std::vector<TensorInfo> specs = {{"w", DType::kBF16, {2, 2}}, {"b", DType::kF32, {2}}};
  auto writer = SafetensorsWriter::create(dir.path / "w.safetensors", specs, {});
  REQUIRE(writer.ok());
  CHECK_FALSE((*writer)->write(at::ones({2, 2})).ok());  // f32 where bf16 was declared
  CHECK((*writer)->write(at::ones({2, 2}, at::kBFloat16)).ok());
  CHECK((*writer)->finish().code() == StatusCode::kFailedPrecondition);  // "b" never written
  CHECK_FALSE(SafetensorsWriter::create(dir.path / "d.safetensors",
                                        {{"x", DType::kF32, {1}}, {"x", DType::kF32, {1}}}, {})
                  .ok());
}

}  // namespace
}  // namespace dsocr::weights
