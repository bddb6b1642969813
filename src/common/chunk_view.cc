#include "common/chunk_view.h"

#include <iterator>
#include <map>

namespace tessera {

std::vector<Segment> BuildChunkView(const std::vector<SliceRecord>& records) {
  std::map<uint32_t, Segment> view;  // by pos; non-overlapping
  for (const SliceRecord& r : records) {
    if (r.len == 0) continue;
    const uint64_t begin = r.pos, end = uint64_t{r.pos} + r.len;
    // Cut the segment that starts before `begin` and reaches into the new one.
    auto it = view.lower_bound(r.pos);
    if (it != view.begin()) {
      auto prev = std::prev(it);
      Segment& p = prev->second;
      const uint64_t p_end = uint64_t{p.pos} + p.len;
      if (p_end > begin) {
        if (p_end > end) {  // the new slice sits inside it: keep its tail too
          Segment tail = p;
          const uint32_t skip = static_cast<uint32_t>(end - p.pos);
          tail.pos = static_cast<uint32_t>(end);
          tail.off += skip;
          tail.len -= skip;
          view[tail.pos] = tail;
        }
        p.len = static_cast<uint32_t>(begin - p.pos);
      }
    }
    // Remove or trim segments that start inside the new one.
    it = view.lower_bound(r.pos);
    while (it != view.end() && it->first < end) {
      Segment s = it->second;
      it = view.erase(it);
      const uint64_t s_end = uint64_t{s.pos} + s.len;
      if (s_end > end) {
        const uint32_t skip = static_cast<uint32_t>(end - s.pos);
        s.pos = static_cast<uint32_t>(end);
        s.off += skip;
        s.len -= skip;
        view[s.pos] = s;
        break;
      }
    }
    view[r.pos] = r;
  }
  std::vector<Segment> out;
  out.reserve(view.size());
  for (auto& [pos, seg] : view) out.push_back(seg);
  return out;
}

}  // namespace tessera
