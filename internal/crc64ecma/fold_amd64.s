#include "textflag.h"

// FOLD folds lane X by the constant pair in K (X.lo times K.lo, X.hi times
// K.hi) and XORs the result into D. T is scratch.
#define FOLD(X, K, T, D) \
	MOVO X, T \
	PCLMULQDQ $0x00, K, X \
	PCLMULQDQ $0x11, K, T \
	PXOR T, X \
	PXOR X, D

// func fold(crc uint64, p *byte, n int, k *[8]uint64) (lo, hi uint64)
TEXT ·fold(SB), NOSPLIT, $0-48
	MOVQ crc+0(FP), AX
	MOVQ p+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ k+24(FP), DX

	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVQ AX, X4
	PXOR X4, X0
	ADDQ $64, SI
	SUBQ $64, CX
	MOVOU 0(DX), X5

	// Four independent lanes keep the multiplier busy: each lane moves
	// forward 512 bits per step.
loop4:
	CMPQ CX, $64
	JB merge
	MOVOU 0(SI), X8
	MOVOU 16(SI), X9
	MOVOU 32(SI), X10
	MOVOU 48(SI), X11
	FOLD(X0, X5, X6, X8)
	FOLD(X1, X5, X7, X9)
	FOLD(X2, X5, X12, X10)
	FOLD(X3, X5, X13, X11)
	MOVO X8, X0
	MOVO X9, X1
	MOVO X10, X2
	MOVO X11, X3
	ADDQ $64, SI
	SUBQ $64, CX
	JMP loop4

merge:
	// Lanes 0, 1 and 2 move forward 384, 256 and 128 bits onto lane 3.
	MOVOU 16(DX), X5
	FOLD(X0, X5, X6, X3)
	MOVOU 32(DX), X5
	FOLD(X1, X5, X6, X3)
	MOVOU 48(DX), X5
	FOLD(X2, X5, X6, X3)

loop1:
	CMPQ CX, $16
	JB done
	MOVOU 0(SI), X8
	FOLD(X3, X5, X6, X8)
	MOVO X8, X3
	ADDQ $16, SI
	SUBQ $16, CX
	JMP loop1

done:
	MOVQ X3, AX
	PEXTRQ $1, X3, BX
	MOVQ AX, lo+32(FP)
	MOVQ BX, hi+40(FP)
	RET
