#include "textflag.h"

// func prefetchRead(spans []lineSpan)
TEXT ·prefetchRead(SB), NOSPLIT, $0-24
	MOVQ spans_base+0(FP), SI
	MOVQ spans_len+8(FP), CX
	TESTQ CX, CX
	JEQ done
span:
	MOVQ 0(SI), AX // first
	MOVQ 8(SI), DX // last
	ANDQ $~63, AX
line:
	PREFETCHT0 (AX)
	ADDQ $64, AX
	CMPQ AX, DX
	JLS line
	ADDQ $16, SI
	DECQ CX
	JNE span
done:
	RET

// func prefetchExclusive(spans []lineSpan)
TEXT ·prefetchExclusive(SB), NOSPLIT, $0-24
	MOVQ spans_base+0(FP), SI
	MOVQ spans_len+8(FP), CX
	TESTQ CX, CX
	JEQ wdone
wspan:
	MOVQ 0(SI), AX
	MOVQ 8(SI), DX
	ANDQ $~63, AX
wline:
	// PREFETCHW (AX): 0F 0D /1, which the Go assembler does not name.
	// Only called where CPUID says the CPU has it (hasPrefetchW).
	BYTE $0x0f; BYTE $0x0d; BYTE $0x08
	ADDQ $64, AX
	CMPQ AX, DX
	JLS wline
	ADDQ $16, SI
	DECQ CX
	JNE wspan
wdone:
	RET

// func cpuid(leaf uint32) (eax, ecx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-16
	MOVL leaf+0(FP), AX
	XORL CX, CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL CX, ecx+12(FP)
	RET
