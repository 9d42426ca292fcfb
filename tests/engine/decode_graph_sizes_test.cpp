// Host-side metadata of the GPU decode path: CUDA-graph batch sizes, padding rows, and the
// FlashInfer page tables built from block tables (torch-free; the GPU itself is tested by the
// [cuda] cases).
#include "engine/core/decode_graph_sizes.h"

#include <catch2/catch.hpp>

#include "engine/kernels/flashinfer_attention.h"

namespace dsocr::engine {
namespace {

TEST_CASE("decode graph sizes cover every batch up to the largest with little padding",
          "[decode_graphs]") {
  CHECK(decode_graph_sizes(0).empty());
  CHECK(decode_graph_sizes(1) == std::vector<int64_t>{1});
  CHECK(decode_graph_sizes(5) == std::vector<int64_t>{1, 2, 4, 5});
  CHECK(decode_graph_sizes(64) == std::vector<int64_t>{1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64});
  const std::vector<int64_t> sizes = decode_graph_sizes(200);
  CHECK(sizes.back() == 200);
  CHECK(std::is_sorted(sizes.begin(), sizes.end()));
  for (int64_t b = 1; b <= 200; ++b) {
    const int64_t p = decode_graph_size_for(sizes, b);
    CAPTURE(b, p);
    REQUIRE(p >= b);
    CHECK(p - b < std::max<int64_t>(16, b / 4));  // bounded waste
  }
  CHECK(decode_graph_size_for(sizes, 201) == 0);
  CHECK(decode_graph_size_for(sizes, 0) == 1);
}

TEST_CASE("padding rows write no K/V and read only the scratch block", "[decode_graphs]") {
  DecodeRows rows;
  rows.ids = {5, 6};
  rows.positions = {10, 40};
  rows.slots = {3 * 16 + 10, 7 * 16 + 8};
  rows.context_lens = {11, 41};
  rows.block_tables = {{3}, {1, 2, 7}};
  pad_decode_rows(rows, 4, /*scratch_block=*/99, /*block_size=*/16);
  REQUIRE(rows.ids.size() == 4);
  CHECK(rows.ids == std::vector<int64_t>{5, 6, 0, 0});
  CHECK(rows.slots == std::vector<int64_t>{58, 120, -1, -1});
  CHECK(rows.context_lens == std::vector<int64_t>{11, 41, 1, 1});
  CHECK(rows.block_tables[3] == std::vector<int32_t>{99});
  pad_decode_rows(rows, 3, 99, 16);  // already long enough: unchanged
  CHECK(rows.ids.size() == 4);
}

TEST_CASE("FlashInfer page tables from block tables", "[decode_graphs]") {
  kernels::PageTableBuilder pages(16);
  const std::vector<int32_t> a = {7, 3, 9}, b = {4}, c = {8, 2, 6, 5};
  pages.add(a.data(), 33, 1);   // 3 pages, 1 token in the last
  pages.add(b.data(), 16, 16);  // 1 full page, a 16-row chunk
  pages.add(c.data(), 48, 5);   // only 3 of its 4 blocks hold context
  const kernels::PageTableView view = pages.view();
  REQUIRE(view.num_seqs == 3);
  CHECK(std::vector<int32_t>(view.page_indptr, view.page_indptr + 4) ==
        std::vector<int32_t>{0, 3, 4, 7});
  CHECK(std::vector<int32_t>(view.page_indices, view.page_indices + 7) ==
        std::vector<int32_t>{7, 3, 9, 4, 8, 2, 6});
  CHECK(std::vector<int32_t>(view.last_page_len, view.last_page_len + 3) ==
        std::vector<int32_t>{1, 16, 16});
  CHECK(std::vector<int32_t>(pages.qo_indptr(), pages.qo_indptr() + 4) ==
        std::vector<int32_t>{0, 1, 17, 22});
  CHECK(pages.rows() == 22);
  pages.clear();
  CHECK(pages.view().num_seqs == 0);
  CHECK(pages.rows() == 0);
}

}  // namespace
}  // namespace dsocr::engine

namespace dsocr::engine {
namespace {

TEST_CASE("which steps a decode graph runs", "[decode_graphs]") {
  // Two sequences: a decoding one (prompt 40, 3 generated) and one whose prompt has an image at
  // positions 5..20 and a last prompt token at 30.
  Sequence a, b;
  a.tokens.assign(43, 7);
  a.tokens[42] = 99;
  a.prompt_len = 40;
  a.kv.blocks = {4, 9, 2};
  b.tokens.assign(31, 3);
  b.prompt_len = 31;
  b.images.push_back({5, 16, 0, true});
  b.kv.blocks = {8, 1};
  StepPlan decode;
  decode.chunks = {{&a, 42, 1, true}, {&b, 30, 1, true}};  // b: its prompt's last token
  std::optional<DecodeRows> rows = graph_decode_rows(decode, 16);
  REQUIRE(rows.has_value());
  CHECK(rows->ids == std::vector<int64_t>{99, 3});
  CHECK(rows->positions == std::vector<int64_t>{42, 30});
  CHECK(rows->slots == std::vector<int64_t>{2 * 16 + 10, 1 * 16 + 14});
  CHECK(rows->context_lens == std::vector<int64_t>{43, 31});
  CHECK(rows->block_tables[1] == std::vector<int32_t>{8, 1});

  StepPlan prefill;  // a chunk of many tokens
  prefill.chunks = {{&a, 42, 1, true}, {&b, 21, 10, true}};
  CHECK_FALSE(graph_decode_rows(prefill, 16).has_value());
  StepPlan image_row;  // one token, but an image placeholder
  image_row.chunks = {{&b, 20, 1, true}};
  CHECK_FALSE(graph_decode_rows(image_row, 16).has_value());
  StepPlan no_sample;  // one token that does not sample (a chunk boundary inside the prompt)
  no_sample.chunks = {{&a, 42, 1, true}, {&b, 25, 1, false}};
  CHECK_FALSE(graph_decode_rows(no_sample, 16).has_value());
  StepPlan empty;
  REQUIRE(graph_decode_rows(empty, 16).has_value());
  CHECK(graph_decode_rows(empty, 16)->ids.empty());
}

}  // namespace
}  // namespace dsocr::engine
