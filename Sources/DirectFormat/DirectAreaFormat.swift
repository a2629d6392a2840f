/// The format of the file `direct` beside a mounted pool's shelves
/// (PoolFS's UnsafeDirectArea writes it; libpoolfs-direct.so reads it):
/// every field a UInt64 word, by index. A target of its own, with no
/// dependency, so that the preloaded library links no more than it needs.
///
/// - header (one page): magic, version, the epoch readers enter, capacities,
///   whether a later mount has retired it, its identity, its mount's pid.
/// - clients (`clientCapacity` × `Client.words` words), one per process:
///   its pid, its readers by the epoch's parity, what it served directly,
///   and its pins: the layouts whose pages it maps (slot + 1, and its
///   mappings of that file: read-only ones in the low half, writable ones
///   in the high half).
/// - layouts (`layoutCapacity` × `layoutWords` words), one per leased
///   file: a generation (odd while rewritten), the inode, its size, flags,
///   and its runs (file offset, length, global address, flags).
public enum DirectAreaFormat {
    public static let fileName = "direct"
    public static let magic: UInt64 = 0x5443_4552_4944_5350   // "PSDIRECT"
    public static let version: UInt64 = 2

    public enum Header {
        public static let magic = 0, version = 1, epoch = 2, clients = 3, layouts = 4, layoutWords = 5
        public static let retired = 6
        /// Random at each mount: a client finds whether the file it mapped is this mount's.
        public static let identity = 7
        /// The mount's process: `poolfs info` shows an area only while it lives.
        public static let mount = 8
        public static let bytes = 4096
    }

    /// A client's words.
    public enum Client {
        public static let pid = 0, readers = 1   // and 2: readers by parity
        public static let bytesRead = 3, bytesWritten = 4, reads = 5, writes = 6
        public static let pins = 8, pinCount = 12
        public static let words = 32
        /// A writable mapping's count in a pin's second word.
        public static let writablePin: UInt64 = 1 << 32
    }

    /// A layout's words; runs follow from `runs`, `Run.words` each.
    public enum Layout {
        public static let generation = 0, inode = 1, size = 2, flags = 3, runCount = 4
        public static let runs = 8
        /// Writes go through the mount: they drop set-ID bits there.
        public static let writesThroughMount: UInt64 = 1
    }

    public enum Run {
        public static let start = 0, length = 1, address = 2, flags = 3
        public static let words = 4
        /// No other owner shares its pages: a direct write may change them.
        public static let writable: UInt64 = 1
    }

    public static let clientCapacity = 256
    public static let layoutCapacity = 4096
    public static let layoutWords = 2048
    public static let maximumRuns = (layoutWords - Layout.runs) / Run.words

    public static var length: Int {
        Header.bytes + clientCapacity * Client.words * 8 + layoutCapacity * layoutWords * 8
    }

    /// Byte offsets in the file.
    public static func clientOffset(_ index: Int) -> Int { Header.bytes + index * Client.words * 8 }
    public static func layoutOffset(_ slot: Int) -> Int {
        Header.bytes + clientCapacity * Client.words * 8 + slot * layoutWords * 8
    }
}
