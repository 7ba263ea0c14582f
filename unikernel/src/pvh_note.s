/*
 * The PVH ELF note that tells QEMU where to enter: type 18
 * (XEN_ELFNOTE_PHYS32_ENTRY), name "Xen", and the 32-bit entry
 * `pvh_start32`. For an ELF64 image QEMU 7.2 reads the descriptor as
 * 8 bytes, hence `.quad`. Shared by the guest and the boot-floor binary.
 */
.pushsection .note.pvh, "a", @note
.balign 4
.long 4
.long 8
.long 18
.asciz "Xen"
.balign 4
.quad pvh_start32
.popsection
