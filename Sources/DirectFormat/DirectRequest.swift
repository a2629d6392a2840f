/// The two ioctls a process with direct access sends on a file of the
/// mount (the kernel passes an ioctl whose size its number encodes).
/// Both sides build and read them here.
public enum DirectRequest {
    /// _IOR('p', 1, 4096 bytes): the file's leased layout. Reply words:
    /// magic, layout slot, inode, the area's identity, the pool
    /// directory's length; its bytes from `pathOffset`.
    public static let lease = command(read: true, number: 1, size: leaseBytes)
    /// _IOW('p', 2, 32 bytes): bytes `[start, end)` were written directly.
    public static let wrote = command(read: false, number: 2, size: wroteBytes)

    public static let leaseBytes = 4096
    public static let wroteBytes = 32
    public static let leaseMagic: UInt64 = 0x4553_4145_4C53_4650   // "PFSLEASE"
    public static let pathOffset = 40

    /// Linux's _IOC: direction, size, type, number.
    private static func command(read: Bool, number: UInt32, size: Int) -> UInt32 {
        (read ? 2 : 1) << 30 | UInt32(size) << 16 | UInt32(UInt8(ascii: "p")) << 8 | number
    }
}
