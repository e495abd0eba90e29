//go:build !amd64

package crc64ecma

const hasFold = false

func fold(crc uint64, p *byte, n int, k *[8]uint64) (lo, hi uint64) {
	panic("crc64ecma: fold without carry-less multiplication")
}
