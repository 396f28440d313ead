/*
 * header.S - the Multiboot v1 header (Multiboot Specification 0.6.96, 3.1.1).
 *
 * The loader scans the first 8 KiB of the file for MB_HEADER_MAGIC at a 4-byte aligned
 * offset; the linker script puts this section first. For an ELF kernel the loader takes
 * the load addresses from the program headers, so bit 16 ("a.out kludge", address fields
 * valid) is not set and the header is just three words: magic, flags, checksum, where
 * magic + flags + checksum == 0 (mod 2^32).
 */
#include "x86.h"

#define MB_FLAGS (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMINFO)

    .section .multiboot, "a"
    .balign 4
    .long MB_HEADER_MAGIC
    .long MB_FLAGS
    .long -(MB_HEADER_MAGIC + MB_FLAGS)
