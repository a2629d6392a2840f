/// What backs a shelf.
public enum Medium: String, Sendable, CaseIterable, Codable {
    /// A tmpfs file: DRAM, gone at reboot.
    case dram
    /// A file mapped with libpmem: real pmem/DAX, or any file flushed with msync.
    case pmem
    /// A memory node's region (PoolNet): the page table stays in this
    /// shelf's file, whose data pages are a cache of the node's bytes.
    case remote

    var code: UInt32 {
        switch self {
        case .dram: 1
        case .pmem: 2
        case .remote: 3
        }
    }

    init?(code: UInt32) {
        switch code {
        case 1: self = .dram
        case 2: self = .pmem
        case 3: self = .remote
        default: return nil
        }
    }
}
