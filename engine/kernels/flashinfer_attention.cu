// FlashInferPagedAttention (see flashinfer_attention.h): FlashInfer's batch decode and FA2 batch
// prefill kernels over a paged KV cache, instantiated for exactly one configuration.
//
// FlashInfer's Python package generates the kernel parameter structs and the attention variant
// from jinja templates at JIT time (csrc/batch_decode_customize_config.jinja,
// csrc/batch_prefill_customize_config.jinja). DecodeParams, PrefillParams and ScaledSoftmax below
// are our hand-written equivalents, trimmed to what the kernels read in our configuration: the
// kernels access optional fields (ALiBi slopes, custom masks, FP4 scale factors, RoPE offsets)
// only under `if constexpr` checks of their existence or of a template flag we leave off.
//
// Workspace sizing (the defaults in Config): FlashInfer splits long KV sequences over several
// CTAs only while the whole grid still fits on the GPU at once, so the split-KV partial outputs
// are bounded by the SM count, not by the batch:
//   decode:  padded_batch <= max_grid / num_kv_heads, max_grid <= 32 CTAs/SM * num_SMs; partial
//            outputs num_qo_heads * padded_batch * head_dim * 4 bytes (H200, 132 SMs, 10 heads:
//            < 2.2 MB);
//   prefill: padded_batch <= 2 * num_SMs / num_kv_heads CTAs of up to 128 rows; partial outputs
//            num_qo_heads * padded_batch * 128 * head_dim * 4 bytes (H200, 10 heads: 17 MB).
// The integer workspace holds the scheduler's per-CTA indices (a few bytes per CTA and per
// prefill row). An undersized workspace is reported by FlashInfer's allocator as an error of
// the plan call, never as a silent overflow.
//
// Graph decode (plan_decode_graph) is DecodePlan with enable_cuda_graph = true, as FlashInfer's
// own BatchDecodeWithPagedKVCacheWrapper(use_cuda_graph=True) does it: the work estimation then
// splits KV exactly when P * num_kv_heads < max_grid (a function of P and the kernel's occupancy
// only) and pads the split grid to max_grid / num_kv_heads CTAs, whose idle tail the kernel
// skips through block_valid_mask; all workspace offsets are functions of that padded size. The
// page table lives at fixed offsets of a buffer sized once for max_graph_batch sequences and
// max_graph_pages entries (the eager slot grows its buffer instead, so the two never share).
// Split-KV partial outputs: num_qo_heads * (max_grid / num_kv_heads) * head_dim * 4 bytes, the
// same bound as eager decode.
#include "engine/kernels/flashinfer_attention.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/mask.cuh>
#include <flashinfer/attention/prefill.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/attention/variant_helper.cuh>
#include <flashinfer/layout.cuh>
#include <flashinfer/page.cuh>
#include <flashinfer/pos_enc.cuh>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dsocr::engine::kernels {
namespace {

// --- The compiled configuration -------------------------------------------------------------

using DType = nv_bfloat16;  // queries, cache and outputs
using IdType = int32_t;     // page indices, indptr arrays
constexpr uint32_t kHeadDim = 128;
constexpr auto kPosEncoding = flashinfer::PosEncodingMode::kNone;
constexpr auto kKvLayout = flashinfer::QKVLayout::kNHD;
constexpr bool kUseFp16QkReduction = false;
constexpr bool kSameKvStrides = true;  // K and V caches have the same shape and strides

using PagedKv = flashinfer::paged_kv_t<DType, IdType>;

// Plain softmax attention with a scale: logits are left alone, masking is left to the kernels
// (decode masks nothing, prefill runs with MaskMode::kCausal). The kernels fold the scale into
// their base-2 exponentials, hence sm_scale * log2(e).
struct ScaledSoftmax : flashinfer::AttentionVariantBase {
  static constexpr bool use_softmax = true;

  uint32_t qo_len;
  uint32_t kv_len;
  uint32_t window_left;  // read by the prefill kernel; kv_len means "no sliding window"
  float sm_scale_log2;

  template <typename Params>
  __device__ __host__ ScaledSoftmax(const Params& params, uint32_t batch_idx, uint8_t* /*smem*/)
      : qo_len(params.get_qo_len(batch_idx)),
        kv_len(params.get_kv_len(batch_idx)),
        window_left(kv_len),
        sm_scale_log2(params.sm_scale * flashinfer::math::log2e) {}
};

// The fields BatchDecodeWithPagedKVCacheDispatched and its kernel read.
struct DecodeParams {
  using DTypeQ = DType;
  using DTypeKV = DType;
  using DTypeO = DType;
  using IdType = kernels::IdType;

  DTypeQ* q;
  PagedKv paged_kv;
  DTypeO* o;
  float* lse;  // unused by us: null
  float sm_scale;

  uint32_t padded_batch_size;
  uint32_t num_qo_heads;
  IdType q_stride_n;
  IdType q_stride_h;
  int32_t window_left;

  // Scheduler output, in the plan's integer workspace.
  IdType* request_indices;
  IdType* kv_tile_indices;
  IdType* o_indptr;
  IdType* kv_chunk_size_ptr;
  bool* block_valid_mask;
  bool partition_kv;

  __host__ __device__ __forceinline__ uint32_t get_qo_len(uint32_t /*batch_idx*/) const {
    return 1;
  }
  __host__ __device__ __forceinline__ uint32_t get_kv_len(uint32_t batch_idx) const {
    return paged_kv.get_length(batch_idx);
  }
};

// The fields BatchPrefillWithPagedKVCacheDispatched and its kernel read.
struct PrefillParams {
  using DTypeQ = DType;
  using DTypeKV = DType;
  using DTypeO = DType;
  using IdType = kernels::IdType;

  DTypeQ* q;
  PagedKv paged_kv;
  IdType* q_indptr;  // device copy of qo_indptr
  DTypeO* o;
  float* lse;  // unused by us: null
  flashinfer::uint_fastdiv group_size;
  float sm_scale;

  uint32_t num_qo_heads;
  IdType q_stride_n;
  IdType q_stride_h;
  // Scale-factor strides of FP4 caches: read unconditionally by the kernel, used only for FP4.
  uint32_t k_sf_stride_page;
  uint32_t k_sf_stride_n;
  uint32_t k_sf_stride_h;
  uint32_t v_sf_stride_page;
  uint32_t v_sf_stride_n;
  uint32_t v_sf_stride_h;
  int32_t window_left;

  // Scheduler output, in the plan's integer workspace.
  IdType* request_indices;
  IdType* qo_tile_indices;
  IdType* kv_tile_indices;
  IdType* merge_indptr;
  IdType* o_indptr;
  bool* block_valid_mask;
  IdType* kv_chunk_size_ptr;
  uint32_t max_total_num_rows;
  uint32_t* total_num_rows;
  uint32_t padded_batch_size;
  bool partition_kv;

  __host__ __device__ __forceinline__ uint32_t get_qo_len(uint32_t batch_idx) const {
    return q_indptr[batch_idx + 1] - q_indptr[batch_idx];
  }
  __host__ __device__ __forceinline__ uint32_t get_kv_len(uint32_t batch_idx) const {
    return paged_kv.get_length(batch_idx);
  }
};

static_assert(std::is_trivially_copyable_v<DecodeParams>);
static_assert(std::is_trivially_copyable_v<PrefillParams>);

// --- Helpers ----------------------------------------------------------------------------------

Status cuda_error(cudaError_t error, const char* what) {
  return internal_error(std::string("FlashInfer attention: ") + what + ": " +
                        cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")");
}

#define DSOCR_FI_CUDA(expr, what)               \
  do {                                          \
    cudaError_t dsocr_fi_error_ = (expr);       \
    if (dsocr_fi_error_ != cudaSuccess) {       \
      return cuda_error(dsocr_fi_error_, what); \
    }                                           \
  } while (false)

// Makes `device` current for a scope and restores the previous device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    error_ = cudaGetDevice(&previous_);
    if (error_ == cudaSuccess && previous_ != device) {
      error_ = cudaSetDevice(device);
      switched_ = error_ == cudaSuccess;
    }
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  cudaError_t error() const { return error_; }

 private:
  int previous_ = 0;
  bool switched_ = false;
  cudaError_t error_ = cudaSuccess;
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

size_t round_up4(size_t n) { return (n + 3) / 4 * 4; }  // int32 counts -> 16-byte boundaries

bool supported_group_size(int group) {
  return group == 1 || group == 2 || group == 3 || group == 4 || group == 6 || group == 8 ||
         group == 16;
}

// One kind of attention (decode or prefill): FlashInfer's workspaces, the device copy of the
// page table and the current plan.
struct PlanSlot {
  const char* name = "";
  void* float_workspace = nullptr;
  size_t float_bytes = 0;
  void* int_workspace = nullptr;  // device
  void* int_pinned = nullptr;     // FlashInfer's host staging of int_workspace
  size_t int_bytes = 0;

  // Page table: [page_indptr | last_page_len | qo_indptr | page_indices], each section starting
  // on a 16-byte boundary, identical on the host (pinned staging) and on the device.
  int32_t* table_host = nullptr;
  int32_t* table_device = nullptr;
  size_t table_capacity = 0;  // int32 elements of each
  size_t indptr_offset = 0, last_offset = 0, qo_offset = 0, indices_offset = 0;

  // Recorded after the plan's host-to-device copies: the staging buffers are free again once it
  // has completed.
  cudaEvent_t copied = nullptr;
  bool copy_pending = false;

  bool planned = false;
  int32_t num_seqs = 0;
  int64_t rows = 0;
  flashinfer::DecodePlanInfo decode_info;
  flashinfer::PrefillPlanInfo prefill_info;

  // Frees everything; the device must be current.
  void release() {
    if (copied != nullptr) {
      if (copy_pending) cudaEventSynchronize(copied);
      cudaEventDestroy(copied);
    }
    if (float_workspace != nullptr) cudaFree(float_workspace);
    if (int_workspace != nullptr) cudaFree(int_workspace);
    if (int_pinned != nullptr) cudaFreeHost(int_pinned);
    if (table_device != nullptr) cudaFree(table_device);
    if (table_host != nullptr) cudaFreeHost(table_host);
    *this = PlanSlot{};
  }

  Status allocate(const char* slot_name, size_t float_size, size_t int_size, size_t table_size) {
    name = slot_name;
    float_bytes = float_size;
    int_bytes = int_size;
    table_capacity = table_size;
    DSOCR_FI_CUDA(cudaMalloc(&float_workspace, float_bytes), "allocating the float workspace");
    DSOCR_FI_CUDA(cudaMalloc(&int_workspace, int_bytes), "allocating the int workspace");
    DSOCR_FI_CUDA(cudaMallocHost(&int_pinned, int_bytes), "allocating pinned host memory");
    DSOCR_FI_CUDA(cudaMalloc(&table_device, table_capacity * sizeof(int32_t)),
                  "allocating the page table");
    DSOCR_FI_CUDA(cudaMallocHost(&table_host, table_capacity * sizeof(int32_t)),
                  "allocating pinned host memory");
    DSOCR_FI_CUDA(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming), "creating an event");
    return Status();
  }

  // Waits until the previous plan's copies have left the staging buffers.
  Status wait_for_staging() {
    if (copy_pending) {
      DSOCR_FI_CUDA(cudaEventSynchronize(copied), "waiting for the previous plan's copy");
      copy_pending = false;
    }
    return Status();
  }

  // Grows the page-table buffers to hold `needed` int32s. Kernels of earlier plans may still be
  // reading the old device buffer, so the stream is drained first (rare: capacity doubles).
  Status reserve_table(size_t needed, cudaStream_t stream) {
    if (needed <= table_capacity) return Status();
    const size_t capacity = std::max(needed, 2 * table_capacity);
    DSOCR_FI_CUDA(cudaStreamSynchronize(stream), "draining the stream before growing");
    DSOCR_FI_CUDA(cudaFree(table_device), "freeing the page table");
    table_device = nullptr;
    DSOCR_FI_CUDA(cudaFreeHost(table_host), "freeing pinned host memory");
    table_host = nullptr;
    table_capacity = 0;
    DSOCR_FI_CUDA(cudaMalloc(&table_device, capacity * sizeof(int32_t)),
                  "allocating the page table");
    DSOCR_FI_CUDA(cudaMallocHost(&table_host, capacity * sizeof(int32_t)),
                  "allocating pinned host memory");
    table_capacity = capacity;
    return Status();
  }

  // Lays the page table (and qo_indptr when given) out in the staging buffer and enqueues its
  // copy to the device.
  Status stage_table(const PageTableView& pages, const int32_t* qo_indptr, cudaStream_t stream) {
    const size_t n = static_cast<size_t>(pages.num_seqs);
    const size_t num_pages = static_cast<size_t>(pages.page_indptr[n]);
    indptr_offset = 0;
    last_offset = indptr_offset + round_up4(n + 1);
    qo_offset = last_offset + round_up4(n);
    indices_offset = qo_offset + (qo_indptr != nullptr ? round_up4(n + 1) : 0);
    const size_t total = indices_offset + std::max<size_t>(num_pages, 1);
    DSOCR_RETURN_IF_ERROR(reserve_table(total, stream));
    std::memcpy(table_host + indptr_offset, pages.page_indptr, (n + 1) * sizeof(int32_t));
    std::memcpy(table_host + last_offset, pages.last_page_len, n * sizeof(int32_t));
    if (qo_indptr != nullptr) {
      std::memcpy(table_host + qo_offset, qo_indptr, (n + 1) * sizeof(int32_t));
    }
    std::memcpy(table_host + indices_offset, pages.page_indices, num_pages * sizeof(int32_t));
    DSOCR_FI_CUDA(
        cudaMemcpyAsync(table_device, table_host, (indices_offset + num_pages) * sizeof(int32_t),
                        cudaMemcpyHostToDevice, stream),
        "copying the page table");
    return Status();
  }

  Status record_copy(cudaStream_t stream) {
    DSOCR_FI_CUDA(cudaEventRecord(copied, stream), "recording an event");
    copy_pending = true;
    return Status();
  }

  // Graph mode: a page-table layout that depends on the capacity only, so that the device
  // addresses the kernels read never change. Call once after allocate().
  void fix_layout(size_t max_seqs) {
    indptr_offset = 0;
    last_offset = indptr_offset + round_up4(max_seqs + 1);
    qo_offset = last_offset + round_up4(max_seqs);
    indices_offset = qo_offset;  // no qo_indptr in decode
  }

  // Graph mode: stages the page table at the fixed offsets and copies it to the device; never
  // reallocates. The caller has checked the capacity.
  Status stage_fixed_table(const PageTableView& pages, cudaStream_t stream) {
    const size_t n = static_cast<size_t>(pages.num_seqs);
    const size_t num_pages = static_cast<size_t>(pages.page_indptr[n]);
    if (indices_offset + num_pages > table_capacity) {
      return internal_error("FlashInfer decode graph plan: page table over capacity");
    }
    std::memcpy(table_host + indptr_offset, pages.page_indptr, (n + 1) * sizeof(int32_t));
    std::memcpy(table_host + last_offset, pages.last_page_len, n * sizeof(int32_t));
    std::memcpy(table_host + indices_offset, pages.page_indices, num_pages * sizeof(int32_t));
    DSOCR_FI_CUDA(
        cudaMemcpyAsync(table_device, table_host, (indices_offset + num_pages) * sizeof(int32_t),
                        cudaMemcpyHostToDevice, stream),
        "copying the page table");
    return Status();
  }

  int32_t* device_indptr() const { return table_device + indptr_offset; }
  int32_t* device_last_page_len() const { return table_device + last_offset; }
  int32_t* device_qo_indptr() const { return table_device + qo_offset; }
  int32_t* device_indices() const { return table_device + indices_offset; }
  int32_t* host_indptr() const { return table_host + indptr_offset; }
  int32_t* host_qo_indptr() const { return table_host + qo_offset; }
};

// Checks a host page table against the configuration; q_lens (prefill) are checked against the
// sequences' lengths.
Status validate_pages(const PageTableView& pages, const int32_t* qo_indptr, int page_size,
                      int64_t num_cache_pages, const char* kind) {
  const std::string where = std::string("FlashInfer ") + kind + " plan: ";
  if (pages.num_seqs < 0) return invalid_argument(where + "negative num_seqs");
  if (pages.num_seqs == 0) return Status();  // an empty plan needs no arrays
  if (pages.page_indptr == nullptr || pages.last_page_len == nullptr) {
    return invalid_argument(where + "page_indptr and last_page_len are required");
  }
  if (pages.page_indptr[0] != 0) return invalid_argument(where + "page_indptr[0] must be 0");
  if (qo_indptr != nullptr && qo_indptr[0] != 0) {
    return invalid_argument(where + "qo_indptr[0] must be 0");
  }
  for (int32_t s = 0; s < pages.num_seqs; ++s) {
    const int64_t num_pages = static_cast<int64_t>(pages.page_indptr[s + 1]) - pages.page_indptr[s];
    const int32_t last = pages.last_page_len[s];
    if (num_pages < 1) {
      return invalid_argument(where + "sequence " + std::to_string(s) + " has no pages");
    }
    if (last < 1 || last > page_size) {
      return invalid_argument(where + "sequence " + std::to_string(s) + " has last_page_len " +
                              std::to_string(last) + ", not in [1, " + std::to_string(page_size) +
                              "]");
    }
    if (qo_indptr != nullptr) {
      const int64_t q_len = static_cast<int64_t>(qo_indptr[s + 1]) - qo_indptr[s];
      const int64_t kv_len = (num_pages - 1) * page_size + last;
      if (q_len < 1 || q_len > kv_len) {
        return invalid_argument(where + "sequence " + std::to_string(s) + " has " +
                                std::to_string(q_len) + " query rows for " +
                                std::to_string(kv_len) + " cached positions");
      }
    }
  }
  const int32_t total_pages = pages.page_indptr[pages.num_seqs];
  if (total_pages > 0 && pages.page_indices == nullptr) {
    return invalid_argument(where + "page_indices is required");
  }
  if (num_cache_pages > 0) {
    for (int32_t i = 0; i < total_pages; ++i) {
      const int32_t page = pages.page_indices[i];
      if (page < 0 || page >= num_cache_pages) {
        return invalid_argument(where + "page index " + std::to_string(page) +
                                " outside the cache's " + std::to_string(num_cache_pages) +
                                " pages");
      }
    }
  }
  return Status();
}

// FlashInfer's decode work estimation, for the GQA group size of the configuration.
template <uint32_t kGroupSize>
cudaError_t estimate_decode_work(bool& split_kv, uint32_t& max_grid_size,
                                 uint32_t& max_num_pages_per_batch, uint32_t& new_batch_size,
                                 uint32_t& gdy, uint32_t batch_size, IdType* kv_indptr_h,
                                 uint32_t num_qo_heads, uint32_t page_size, bool enable_cuda_graph,
                                 cudaStream_t stream) {
  return flashinfer::BatchDecodeWithPagedKVCacheWorkEstimationDispatched<
      kGroupSize, kHeadDim, kPosEncoding, ScaledSoftmax, DecodeParams>(
      split_kv, max_grid_size, max_num_pages_per_batch, new_batch_size, gdy, batch_size,
      kv_indptr_h, num_qo_heads, page_size, enable_cuda_graph, stream);
}

template <uint32_t kCtaTileQ>
cudaError_t launch_prefill(const PrefillParams& params, DType* tmp_v, float* tmp_s,
                           cudaStream_t stream) {
  return flashinfer::BatchPrefillWithPagedKVCacheDispatched<
      kSameKvStrides, kCtaTileQ, kHeadDim, kHeadDim, kPosEncoding, kUseFp16QkReduction,
      flashinfer::MaskMode::kCausal, ScaledSoftmax, PrefillParams>(params, tmp_v, tmp_s,
                                                                   /*enable_pdl=*/false, stream);
}

}  // namespace

// --- Impl -------------------------------------------------------------------------------------

struct FlashInferPagedAttention::Impl {
  Config config;
  float sm_scale = 0;
  PlanSlot decode;
  PlanSlot prefill;
  PlanSlot decode_graph;         // allocated only when config.max_graph_batch > 0
  bool decode_is_graph = false;  // which decode slot the latest decode plan used
  // The launch of the first graph plan for each P (index P), which later plans for P must match.
  std::vector<bool> graph_launch_recorded;
  std::vector<flashinfer::DecodePlanInfo> graph_launch;

  ~Impl() {
    DeviceGuard guard(config.device);
    decode.release();
    prefill.release();
    decode_graph.release();
  }

  const PlanSlot& decode_slot() const { return decode_is_graph ? decode_graph : decode; }

  PagedKv paged_kv(const PlanSlot& slot, const void* k_cache, const void* v_cache) const {
    return PagedKv(static_cast<uint32_t>(config.num_kv_heads),
                   static_cast<uint32_t>(config.page_size), kHeadDim,
                   static_cast<uint32_t>(slot.num_seqs), kKvLayout,
                   static_cast<DType*>(const_cast<void*>(k_cache)),
                   static_cast<DType*>(const_cast<void*>(v_cache)), slot.device_indices(),
                   slot.device_indptr(), slot.device_last_page_len());
  }

  Status check_run_args(const PlanSlot& slot, const void* q, const void* k_cache,
                        const void* v_cache, void* out, int64_t q_row_stride) const {
    const std::string where = std::string("FlashInfer ") + slot.name + " run: ";
    if (!slot.planned) return failed_precondition(where + "no valid plan");
    if (slot.num_seqs == 0) return Status();  // nothing runs: an empty tensor's null pointers
    if (q == nullptr || k_cache == nullptr || v_cache == nullptr || out == nullptr) {
      return invalid_argument(where + "null pointer");
    }
    if (!aligned16(q) || !aligned16(k_cache) || !aligned16(v_cache) || !aligned16(out)) {
      return invalid_argument(where + "pointers must be 16-byte aligned");
    }
    const int64_t row = int64_t{config.num_qo_heads} * kHeadDim;
    if (q_row_stride != 0 && (q_row_stride < row || q_row_stride % 8 != 0)) {
      return invalid_argument(where + "q_row_stride " + std::to_string(q_row_stride) +
                              " must be >= " + std::to_string(row) + " and a multiple of 8");
    }
    return Status();
  }
};

FlashInferPagedAttention::FlashInferPagedAttention(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

FlashInferPagedAttention::~FlashInferPagedAttention() = default;

const FlashInferPagedAttention::Config& FlashInferPagedAttention::config() const {
  return impl_->config;
}

int64_t FlashInferPagedAttention::decode_rows() const {
  const PlanSlot& slot = impl_->decode_slot();
  return slot.planned ? slot.rows : 0;
}

bool FlashInferPagedAttention::decode_split_kv() const {
  const PlanSlot& slot = impl_->decode_slot();
  return slot.planned && slot.num_seqs > 0 && slot.decode_info.split_kv;
}

int64_t FlashInferPagedAttention::prefill_rows() const {
  return impl_->prefill.planned ? impl_->prefill.rows : 0;
}

StatusOr<std::unique_ptr<FlashInferPagedAttention>> FlashInferPagedAttention::create(
    const Config& config) {
  if (config.head_dim != static_cast<int>(kHeadDim)) {
    return invalid_argument("FlashInfer attention is compiled for head_dim 128, not " +
                            std::to_string(config.head_dim));
  }
  if (config.num_qo_heads < 1 || config.num_kv_heads < 1 ||
      config.num_qo_heads % config.num_kv_heads != 0 ||
      !supported_group_size(config.num_qo_heads / config.num_kv_heads)) {
    return invalid_argument("FlashInfer attention: unsupported heads " +
                            std::to_string(config.num_qo_heads) + " / kv heads " +
                            std::to_string(config.num_kv_heads) +
                            " (the ratio must be 1, 2, 3, 4, 6, 8 or 16)");
  }
  if (config.page_size < 1) {
    return invalid_argument("FlashInfer attention: page_size must be positive");
  }
  if (config.decode_float_workspace_bytes == 0 || config.prefill_float_workspace_bytes == 0 ||
      config.int_workspace_bytes == 0) {
    return invalid_argument("FlashInfer attention: workspace sizes must be positive");
  }
  if (config.max_graph_batch < 0 || config.max_graph_pages < 0 ||
      (config.max_graph_batch > 0 && config.max_graph_pages == 0)) {
    return invalid_argument(
        "FlashInfer attention: max_graph_batch and max_graph_pages must be >= 0, and "
        "max_graph_pages > 0 when max_graph_batch > 0");
  }
  int device_count = 0;
  DSOCR_FI_CUDA(cudaGetDeviceCount(&device_count), "counting devices");
  if (config.device < 0 || config.device >= device_count) {
    return invalid_argument("FlashInfer attention: no CUDA device " +
                            std::to_string(config.device));
  }
  DeviceGuard guard(config.device);
  DSOCR_FI_CUDA(guard.error(), "selecting the device");
  int major = 0;
  DSOCR_FI_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, config.device),
                "querying the device");
  if (major < 8) {
    return failed_precondition(
        "FlashInfer attention needs compute capability 8.0 or newer "
        "(bf16 tensor cores); device " +
        std::to_string(config.device) + " has " + std::to_string(major) + ".x");
  }

  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->sm_scale = config.sm_scale > 0 ? static_cast<float>(config.sm_scale)
                                       : static_cast<float>(1.0 / std::sqrt(double{kHeadDim}));
  constexpr size_t kInitialTable = 64 * 1024;  // int32s: 256 KiB, grows on demand
  DSOCR_RETURN_IF_ERROR(impl->decode.allocate("decode", config.decode_float_workspace_bytes,
                                              config.int_workspace_bytes, kInitialTable));
  DSOCR_RETURN_IF_ERROR(impl->prefill.allocate("prefill", config.prefill_float_workspace_bytes,
                                               config.int_workspace_bytes, kInitialTable));
  if (config.max_graph_batch > 0) {
    const size_t max_seqs = static_cast<size_t>(config.max_graph_batch);
    const size_t table =
        round_up4(max_seqs + 1) + round_up4(max_seqs) + static_cast<size_t>(config.max_graph_pages);
    DSOCR_RETURN_IF_ERROR(impl->decode_graph.allocate(
        "decode (graph)", config.decode_float_workspace_bytes, config.int_workspace_bytes, table));
    impl->decode_graph.fix_layout(max_seqs);
    impl->graph_launch_recorded.assign(max_seqs + 1, false);
    impl->graph_launch.assign(max_seqs + 1, flashinfer::DecodePlanInfo());
  }
  return std::unique_ptr<FlashInferPagedAttention>(new FlashInferPagedAttention(std::move(impl)));
}

Status FlashInferPagedAttention::plan_decode(const PageTableView& pages, void* stream_ptr) {
  Impl& s = *impl_;
  PlanSlot& slot = s.decode;
  s.decode_is_graph = false;
  slot.planned = false;
  DSOCR_RETURN_IF_ERROR(
      validate_pages(pages, nullptr, s.config.page_size, s.config.num_pages, "decode"));
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(s.config.device);
  DSOCR_FI_CUDA(guard.error(), "selecting the device");
  DSOCR_RETURN_IF_ERROR(slot.wait_for_staging());
  slot.num_seqs = pages.num_seqs;
  slot.rows = pages.num_seqs;
  if (pages.num_seqs == 0) {
    slot.planned = true;
    return Status();
  }
  DSOCR_RETURN_IF_ERROR(slot.stage_table(pages, nullptr, stream));
  try {
    flashinfer::DecodePlanInfo info;
    cudaError_t error = cudaSuccess;
    DISPATCH_GQA_GROUP_SIZE(s.config.num_qo_heads / s.config.num_kv_heads, kGroupSize, {
      error = flashinfer::DecodePlan<kHeadDim, kPosEncoding, ScaledSoftmax, DecodeParams>(
          slot.float_workspace, slot.float_bytes, slot.int_workspace, slot.int_pinned,
          slot.int_bytes, info, slot.host_indptr(), static_cast<uint32_t>(pages.num_seqs),
          static_cast<uint32_t>(s.config.num_qo_heads), static_cast<uint32_t>(s.config.page_size),
          /*enable_cuda_graph=*/false, stream, estimate_decode_work<kGroupSize>);
    });
    // Record even on failure: the page-table copy above is in flight either way.
    DSOCR_RETURN_IF_ERROR(slot.record_copy(stream));
    DSOCR_FI_CUDA(error, "planning decode");
    slot.decode_info = info;
  } catch (const std::exception& e) {
    (void)slot.record_copy(stream);
    return internal_error(std::string("FlashInfer decode plan: ") + e.what());
  }
  slot.planned = true;
  return Status();
}

Status FlashInferPagedAttention::plan_decode_graph(const PageTableView& pages, void* stream_ptr) {
  Impl& s = *impl_;
  PlanSlot& slot = s.decode_graph;
  s.decode_is_graph = true;
  slot.planned = false;
  const std::string where = "FlashInfer decode graph plan: ";
  if (s.config.max_graph_batch <= 0) {
    return failed_precondition(where + "graph mode is off (Config::max_graph_batch is 0)");
  }
  if (pages.num_seqs < 1) {
    return invalid_argument(where + "a graph plan needs at least one sequence");
  }
  if (pages.num_seqs > s.config.max_graph_batch) {
    return resource_exhausted(where + std::to_string(pages.num_seqs) +
                              " sequences, over max_graph_batch " +
                              std::to_string(s.config.max_graph_batch));
  }
  DSOCR_RETURN_IF_ERROR(
      validate_pages(pages, nullptr, s.config.page_size, s.config.num_pages, "decode graph"));
  const int64_t total_pages = pages.page_indptr[pages.num_seqs];
  if (total_pages > s.config.max_graph_pages) {
    return resource_exhausted(where + std::to_string(total_pages) +
                              " page-table entries, over max_graph_pages " +
                              std::to_string(s.config.max_graph_pages));
  }
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(s.config.device);
  DSOCR_FI_CUDA(guard.error(), "selecting the device");
  DSOCR_RETURN_IF_ERROR(slot.wait_for_staging());
  DSOCR_RETURN_IF_ERROR(slot.stage_fixed_table(pages, stream));
  flashinfer::DecodePlanInfo info;
  try {
    cudaError_t error = cudaSuccess;
    DISPATCH_GQA_GROUP_SIZE(s.config.num_qo_heads / s.config.num_kv_heads, kGroupSize, {
      error = flashinfer::DecodePlan<kHeadDim, kPosEncoding, ScaledSoftmax, DecodeParams>(
          slot.float_workspace, slot.float_bytes, slot.int_workspace, slot.int_pinned,
          slot.int_bytes, info, slot.host_indptr(), static_cast<uint32_t>(pages.num_seqs),
          static_cast<uint32_t>(s.config.num_qo_heads), static_cast<uint32_t>(s.config.page_size),
          /*enable_cuda_graph=*/true, stream, estimate_decode_work<kGroupSize>);
    });
    // Record even on failure: the page-table copy above is in flight either way.
    DSOCR_RETURN_IF_ERROR(slot.record_copy(stream));
    DSOCR_FI_CUDA(error, "planning decode (graph)");
  } catch (const std::exception& e) {
    (void)slot.record_copy(stream);
    return internal_error(where + e.what());
  }
  // Everything run_decode derives from the plan (grid, kernel, offsets) is in `info`; the rest
  // of the launch (page-table addresses, P, scale, strides) is fixed by construction.
  const size_t p = static_cast<size_t>(pages.num_seqs);
  if (!s.graph_launch_recorded[p]) {
    s.graph_launch[p] = info;
    s.graph_launch_recorded[p] = true;
  } else if (s.graph_launch[p].ToVector() != info.ToVector()) {
    const flashinfer::DecodePlanInfo& first = s.graph_launch[p];
    return failed_precondition(
        where + "the launch for " + std::to_string(p) + " sequences would differ from the " +
        "recorded one (split_kv " + std::to_string(info.split_kv) + " vs " +
        std::to_string(first.split_kv) + ", padded batch " +
        std::to_string(info.padded_batch_size) + " vs " + std::to_string(first.padded_batch_size) +
        "); run this step eagerly");
  }
  slot.decode_info = info;
  slot.num_seqs = pages.num_seqs;
  slot.rows = pages.num_seqs;
  slot.planned = true;
  return Status();
}

Status FlashInferPagedAttention::plan_prefill(const int32_t* qo_indptr, const PageTableView& pages,
                                              void* stream_ptr) {
  Impl& s = *impl_;
  PlanSlot& slot = s.prefill;
  slot.planned = false;
  if (pages.num_seqs > 0 && qo_indptr == nullptr) {
    return invalid_argument("FlashInfer prefill plan: qo_indptr is null");
  }
  DSOCR_RETURN_IF_ERROR(
      validate_pages(pages, qo_indptr, s.config.page_size, s.config.num_pages, "prefill"));
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(s.config.device);
  DSOCR_FI_CUDA(guard.error(), "selecting the device");
  DSOCR_RETURN_IF_ERROR(slot.wait_for_staging());
  slot.num_seqs = pages.num_seqs;
  slot.rows = pages.num_seqs > 0 ? qo_indptr[pages.num_seqs] : 0;
  if (pages.num_seqs == 0) {
    slot.planned = true;
    return Status();
  }
  DSOCR_RETURN_IF_ERROR(slot.stage_table(pages, qo_indptr, stream));
  try {
    flashinfer::PrefillPlanInfo info;
    const cudaError_t error = flashinfer::PrefillPlan<IdType>(
        slot.float_workspace, slot.float_bytes, slot.int_workspace, slot.int_pinned, slot.int_bytes,
        info, slot.host_qo_indptr(), slot.host_indptr(), static_cast<uint32_t>(slot.rows),
        static_cast<uint32_t>(pages.num_seqs), static_cast<uint32_t>(s.config.num_qo_heads),
        static_cast<uint32_t>(s.config.num_kv_heads), kHeadDim, kHeadDim,
        static_cast<uint32_t>(s.config.page_size),
        /*enable_cuda_graph=*/false, /*sizeof_dtype_o=*/sizeof(DType), /*window_left=*/-1,
        /*fixed_split_size=*/-1, /*disable_split_kv=*/false, /*num_colocated_ctas=*/0,
        /*uniform_q_len=*/0, stream, /*kv_dtype_bytes=*/sizeof(DType));
    DSOCR_RETURN_IF_ERROR(slot.record_copy(stream));
    DSOCR_FI_CUDA(error, "planning prefill");
    if (info.cta_tile_q != 16 && info.cta_tile_q != 64 && info.cta_tile_q != 128) {
      return internal_error("FlashInfer prefill plan chose cta_tile_q " +
                            std::to_string(info.cta_tile_q) + ", which is not compiled");
    }
    slot.prefill_info = info;
  } catch (const std::exception& e) {
    (void)slot.record_copy(stream);
    return internal_error(std::string("FlashInfer prefill plan: ") + e.what());
  }
  slot.planned = true;
  return Status();
}

Status FlashInferPagedAttention::run_decode(const void* q, const void* k_cache, const void* v_cache,
                                            void* out, void* stream_ptr, int64_t q_row_stride) {
  const Impl& s = *impl_;
  const PlanSlot& slot = s.decode_slot();
  DSOCR_RETURN_IF_ERROR(s.check_run_args(slot, q, k_cache, v_cache, out, q_row_stride));
  if (slot.num_seqs == 0) return Status();
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(s.config.device);
  DSOCR_FI_CUDA(guard.error(), "selecting the device");
  const flashinfer::DecodePlanInfo& info = slot.decode_info;

  DecodeParams params{};
  params.q = static_cast<DType*>(const_cast<void*>(q));
  params.paged_kv = s.paged_kv(slot, k_cache, v_cache);
  params.o = static_cast<DType*>(out);
  params.lse = nullptr;
  params.sm_scale = s.sm_scale;
  params.num_qo_heads = static_cast<uint32_t>(s.config.num_qo_heads);
  params.q_stride_n = static_cast<IdType>(
      q_row_stride != 0 ? q_row_stride : int64_t{s.config.num_qo_heads} * kHeadDim);
  params.q_stride_h = kHeadDim;
  params.window_left = -1;
  params.request_indices =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.request_indices_offset);
  params.kv_tile_indices =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.kv_tile_indices_offset);
  params.o_indptr =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.o_indptr_offset);
  params.kv_chunk_size_ptr =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.kv_chunk_size_ptr_offset);
  params.block_valid_mask = nullptr;
  params.partition_kv = false;
  params.padded_batch_size = static_cast<uint32_t>(info.padded_batch_size);
  DType* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (info.split_kv) {
    tmp_v = flashinfer::GetPtrFromBaseOffset<DType>(slot.float_workspace, info.v_offset);
    tmp_s = flashinfer::GetPtrFromBaseOffset<float>(slot.float_workspace, info.s_offset);
    // Graph plans pad the split grid beyond the work; the mask makes the extra CTAs exit.
    if (info.enable_cuda_graph) {
      params.block_valid_mask =
          flashinfer::GetPtrFromBaseOffset<bool>(slot.int_workspace, info.block_valid_mask_offset);
    }
  }
  try {
    DSOCR_FI_CUDA((flashinfer::BatchDecodeWithPagedKVCacheDispatched<kHeadDim, kPosEncoding,
                                                                     ScaledSoftmax, DecodeParams>(
                      params, tmp_v, tmp_s, /*enable_pdl=*/false, stream)),
                  "launching decode");
  } catch (const std::exception& e) {
    return internal_error(std::string("FlashInfer decode run: ") + e.what());
  }
  return Status();
}

Status FlashInferPagedAttention::run_prefill(const void* q, const void* k_cache,
                                             const void* v_cache, void* out, void* stream_ptr,
                                             int64_t q_row_stride) {
  const Impl& s = *impl_;
  const PlanSlot& slot = s.prefill;
  DSOCR_RETURN_IF_ERROR(s.check_run_args(slot, q, k_cache, v_cache, out, q_row_stride));
  if (slot.num_seqs == 0) return Status();
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(s.config.device);
  DSOCR_FI_CUDA(guard.error(), "selecting the device");
  const flashinfer::PrefillPlanInfo& info = slot.prefill_info;

  PrefillParams params{};
  params.q = static_cast<DType*>(const_cast<void*>(q));
  params.paged_kv = s.paged_kv(slot, k_cache, v_cache);
  params.q_indptr = slot.device_qo_indptr();
  params.o = static_cast<DType*>(out);
  params.lse = nullptr;
  params.group_size = flashinfer::uint_fastdiv(
      static_cast<uint32_t>(s.config.num_qo_heads / s.config.num_kv_heads));
  params.sm_scale = s.sm_scale;
  params.num_qo_heads = static_cast<uint32_t>(s.config.num_qo_heads);
  params.q_stride_n = static_cast<IdType>(
      q_row_stride != 0 ? q_row_stride : int64_t{s.config.num_qo_heads} * kHeadDim);
  params.q_stride_h = kHeadDim;
  params.window_left = -1;
  params.request_indices =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.request_indices_offset);
  params.qo_tile_indices =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.qo_tile_indices_offset);
  params.kv_tile_indices =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.kv_tile_indices_offset);
  params.o_indptr =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.o_indptr_offset);
  params.kv_chunk_size_ptr =
      flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.kv_chunk_size_ptr_offset);
  params.merge_indptr = nullptr;
  params.block_valid_mask = nullptr;
  params.total_num_rows = nullptr;
  params.max_total_num_rows = static_cast<uint32_t>(info.total_num_rows);
  params.padded_batch_size = static_cast<uint32_t>(info.padded_batch_size);
  params.partition_kv = false;
  DType* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (info.split_kv) {
    params.merge_indptr =
        flashinfer::GetPtrFromBaseOffset<IdType>(slot.int_workspace, info.merge_indptr_offset);
    tmp_v = flashinfer::GetPtrFromBaseOffset<DType>(slot.float_workspace, info.v_offset);
    tmp_s = flashinfer::GetPtrFromBaseOffset<float>(slot.float_workspace, info.s_offset);
  }
  try {
    cudaError_t error = cudaSuccess;
    switch (info.cta_tile_q) {
      case 16:
        error = launch_prefill<16>(params, tmp_v, tmp_s, stream);
        break;
      case 64:
        error = launch_prefill<64>(params, tmp_v, tmp_s, stream);
        break;
      case 128:
        error = launch_prefill<128>(params, tmp_v, tmp_s, stream);
        break;
      default:
        return internal_error("FlashInfer prefill run: cta_tile_q " +
                              std::to_string(info.cta_tile_q) + " is not compiled");
    }
    DSOCR_FI_CUDA(error, "launching prefill");
  } catch (const std::exception& e) {
    return internal_error(std::string("FlashInfer prefill run: ") + e.what());
  }
  return Status();
}

}  // namespace dsocr::engine::kernels
