import ArgumentParser
import PoolCore

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a pool of one shelf.",
        discussion: """
            A dram pool is a tmpfs file, gone at reboot. A pmem pool is mapped with libpmem:
            on a DAX file system it is persistent memory; on any other file system it is
            kept with msync, so a pool under --path on a disk survives reboots.
            """)

    @OptionGroup var pool: PoolLocation

    @Option(help: "Capacity of the first shelf (grow adds more).")
    var size = "4G"

    @Option(name: .customLong("page-size"), help: "The allocation unit, a power of two from 4K to 1G.")
    var pageSize = "64K"

    @Option(help: "dram (tmpfs) or pmem (libpmem).")
    var medium = "dram"

    @Option(help: "Default placement of heaps and regions: local, bind NODES, preferred NODE, preferred-many NODES, interleave NODES, weighted-interleave NODES.")
    var policy: String?

    func run() throws {
        try reportingErrors {
            guard let medium = Medium(rawValue: medium) else {
                throw PoolError.invalidMedium(medium)
            }
            let size = try parseSize(size)
            let pageSizeBytes: UInt64
            do { pageSizeBytes = try ByteSize.parse(pageSize) } catch {
                throw PoolError.invalidPageSize(pageSize, reason: "expected a size such as 4K or 64K")
            }
            let placement = try policy.map(Placement.init(parsing:))
            let created = try Pool.create(name: pool.name, size: size, pageSize: pageSizeBytes,
                                          medium: medium, placement: placement, at: pool.path)
            let info = created.info()
            print("created pool '\(info.name)' at \(info.path): \(ByteSize.format(info.capacityBytes)) in "
                + "\(info.shelves[0].pages) pages of \(ByteSize.format(info.pageSize)), \(medium.rawValue)")
        }
    }
}
