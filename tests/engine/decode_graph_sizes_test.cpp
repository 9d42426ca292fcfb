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

TEST_CASE("padding rows write only into the scratch block", "[decode_graphs]") {
  DecodeRows rows;
  rows.ids = {5, 6};
  rows.positions = {10, 40};
  rows.slots = {3 * 16 + 10, 7 * 16 + 8};
  rows.context_lens = {11, 41};
  rows.block_tables = {{3}, {1, 2, 7}};
  pad_decode_rows(rows, 4, /*scratch_block=*/99, /*block_size=*/16);
  REQUIRE(rows.ids.size() == 4);
  CHECK(rows.ids == std::vector<int64_t>{5, 6, 0, 0});
  CHECK(rows.slots == std::vector<int64_t>{58, 120, 99 * 16, 99 * 16});
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
