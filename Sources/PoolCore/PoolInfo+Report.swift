extension PoolInfo {
    private static func percent(_ part: UInt64, _ whole: UInt64) -> String {
        whole == 0 ? "0%" : "\((part * 100 + whole / 2) / whole)%"
    }

    /// The text `poolfs info` prints and `.pool/info` holds.
    public var report: String {
        let info = self
        var out = """
            pool       \(info.name)
            path       \(info.path)
            uuid       \(info.uuid)
            page size  \(ByteSize.format(info.pageSize))
            capacity   \(ByteSize.format(info.capacityBytes))
            used       \(ByteSize.format(info.usedBytes)) (\(PoolInfo.percent(info.usedBytes, info.capacityBytes)))
            free       \(ByteSize.format(info.freeBytes)) (\(ByteSize.format(info.cachedBytes)) of it held in process caches)
            resident   \(ByteSize.format(info.residentBytes)) (memory the shelves take now; a mount gives back free pages within seconds)

            """
        out += "shelves    \(info.shelves.count)\n"
        for shelf in info.shelves {
            let medium = shelf.medium.rawValue + (shelf.persistentMemory ? " (real pmem)" : "")
            out += "  \(shelf.index)  \(medium)  \(ByteSize.format(shelf.sizeBytes))  \(shelf.pages) pages, "
                + "\(shelf.usedPages) used, \(shelf.freePages + shelf.cachedPages) free  \(shelf.path)\n"
            if let remote = shelf.remote { out += "     \(remote.summary)\n" }
        }
        out += "heaps      \(info.heaps.count)\n"
        for heap in info.heaps {
            out += "  \(heap.name)  \(heap.pages) pages" + (heap.placement.isEmpty ? "" : "  \(heap.placement)") + "\n"
        }
        out += "regions    \(info.regions.count)\n"
        for region in info.regions {
            out += "  \(region.name)  \(ByteSize.format(region.size))  at \(region.address)\n"
        }
        out += "processes  " + (info.processes.isEmpty ? "none" : info.processes.map(String.init).joined(separator: " ")) + "\n"
        return out
    }
}
