// TRANSPOSE(a, b, c, d): the 4×4 float64 transpose of rows a-d into
// Y12-Y15 (Y(12+j) holds element j of each row; Y8-Y11 are clobbered).
// finishPassAVX2 turns field rows into lanes' Stats records with it,
// gatherStepAVX2 records into field rows (the transpose is its own inverse).
#define TRANSPOSE(a, b, c, d) \
	VUNPCKLPD b, a, Y8; \
	VUNPCKHPD b, a, Y9; \
	VUNPCKLPD d, c, Y10; \
	VUNPCKHPD d, c, Y11; \
	VPERM2F128 $0x20, Y10, Y8, Y12; \
	VPERM2F128 $0x20, Y11, Y9, Y13; \
	VPERM2F128 $0x31, Y10, Y8, Y14; \
	VPERM2F128 $0x31, Y11, Y9, Y15

