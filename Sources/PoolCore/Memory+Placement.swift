import CNuma
#if canImport(Glibc)
import Glibc
#endif

/// mbind, get_mempolicy and move_pages on ranges of the pool's mapping.
enum NodePlacement {
    static let maskWords = 64   // 4096 nodes

    /// Applies a placement to `[pointer, pointer+bytes)`; with `migrate`
    /// pages already there move (MPOL_MF_MOVE).
    static func apply(_ placement: Placement, to pointer: UnsafeMutableRawPointer, bytes: Int,
                      migrate: Bool) throws {
        var mask = [UInt](repeating: 0, count: maskWords)
        for node in placement.nodes.nodes { mask[node / 64] |= 1 << UInt(node % 64) }
        let flags: UInt32 = migrate ? UInt32(MPOL_MF_MOVE) : 0
        let result = mask.withUnsafeBufferPointer { words in
            mbind(pointer, UInt(bytes), placement.mode, placement.nodes.nodes.isEmpty ? nil : words.baseAddress,
                  UInt(maskWords * 64 + 1), flags)
        }
        if result != 0 {
            throw PoolError.invalidPlacement(placement.description, reason: "mbind refused it: \(SystemCall.message(errno))")
        }
    }

    /// The kernel's policy at an address: its mode and nodes.
    static func policy(at pointer: UnsafeMutableRawPointer) -> (mode: Int32, nodes: NodeSet)? {
        var mode: Int32 = 0
        var mask = [UInt](repeating: 0, count: maskWords)
        let result = mask.withUnsafeMutableBufferPointer {
            get_mempolicy(&mode, $0.baseAddress, UInt(maskWords * 64 + 1), pointer, UInt32(MPOL_F_ADDR))
        }
        guard result == 0 else { return nil }
        let nodes = (0..<maskWords * 64).filter { mask[$0 / 64] >> UInt($0 % 64) & 1 == 1 }
        return (mode & 0xffff, NodeSet(nodes))
    }

    /// The node each page lives on (move_pages in query mode); nil for a
    /// page not yet touched.
    static func nodes(of pages: [UnsafeMutableRawPointer]) -> [Int?] {
        guard !pages.isEmpty else { return [] }
        var addresses: [UnsafeMutableRawPointer?] = pages
        var status = [Int32](repeating: 0, count: pages.count)
        let result = addresses.withUnsafeMutableBufferPointer { list in
            move_pages(0, UInt(pages.count), list.baseAddress, nil, &status, 0)
        }
        guard result >= 0 else { return pages.map { _ in nil } }
        return status.map { $0 >= 0 ? Int($0) : nil }
    }
}
