// CRC32C (Castagnoli; polynomial 0x1EDC6F41, bit-reflected 0x82F63B78, as in
// iSCSI, ext4 and RocksDB): the checksum of cached blocks and of cache-group
// payloads. CRC32C rather than zlib's CRC32 because x86-64 (SSE4.2) and ARMv8
// compute it in hardware at several GB/s, so checking every cache read costs
// little next to the read itself.
//
// Extend picks the fastest implementation once, at first use: the SSE4.2
// crc32 instruction when the CPU has it, otherwise a portable slicing-by-8
// table. Both give identical results. All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tessera::crc32c {

// The CRC32C of data[0, n) appended to bytes whose CRC32C is `crc` (0 for no
// bytes), so that Extend(Value(a), b, len_b) == Value(a followed by b).
uint32_t Extend(uint32_t crc, const void* data, size_t n);

inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(std::string_view data) { return Extend(0, data.data(), data.size()); }

// The two implementations behind Extend, exposed for tests and benchmarks.
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t n);
// True when this CPU computes CRC32C in hardware (x86-64 with SSE4.2).
bool HardwareAvailable();
// The hardware path. Only call it when HardwareAvailable() is true: on other
// CPUs it would fault with an illegal instruction (on non-x86 builds it
// falls back to the portable path).
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t n);

}  // namespace tessera::crc32c
