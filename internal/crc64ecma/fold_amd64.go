package crc64ecma

import "golang.org/x/sys/cpu"

var hasFold = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41

// fold reduces p[:n] (n a multiple of 16, at least 64), with crc XORed into
// its first eight bytes, to a 128-bit value congruent to it modulo the
// polynomial, returned as its low and high 64 bits.
//
//go:noescape
func fold(crc uint64, p *byte, n int, k *[8]uint64) (lo, hi uint64)
