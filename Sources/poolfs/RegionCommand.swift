import ArgumentParser
import PoolCore

struct RegionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "region",
        abstract: "Create, list and destroy regions: named runs of pages mapped as plain memory.",
        subcommands: [Create.self, List.self, Clone.self, Destroy.self, Chmod.self, Chown.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a zero-filled region.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The region's name.") var region: String
        @Option(help: "Its size; rounded up to whole pages.") var size: String
        @Option(help: "Where its pages live (as for `heap policy`); the pool's default otherwise.") var policy: String?
        @Option(help: "Its permission bits, in octal (who may map it, as for a file).") var mode = "600"

        func run() throws {
            try pool.withPool { opened in
                let size = try parseSize(size)
                let placement = try policy.map(Placement.init(parsing:))
                var access = RegionAccess.creators
                access.mode = try parseMode(mode)
                let created = try opened.createRegion(name: region, size: size, placement: placement, access: access)
                print("created region '\(created.name)' (\(ByteSize.format(created.size))) at \(created.address)")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a pool's regions.")
        @OptionGroup var pool: PoolLocation

        func run() throws {
            try pool.withPool { opened in
                let sharing = opened.regionSharing()
                for region in opened.regions() {
                    let access = region.access
                    // A clone still sharing pages: how much of it is its own.
                    let shared = sharing[region.name].map {
                        "\tshares pages with '\($0.source)', holds \(ByteSize.format($0.heldBytes)) itself"
                    } ?? ""
                    print("\(region.name)\t\(ByteSize.format(region.size))\t\(region.address)\t"
                        + "\(String(access.mode, radix: 8)) \(access.uid):\(access.gid)\(shared)")
                }
            }
        }
    }

    struct Clone: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make region NEWREGION a clone of REGION: its size, owner, mode and bytes.",
            discussion: """
                The bytes are those of one instant (the pool is frozen for it, a few milliseconds), and the \
                clone shares REGION's pages: each page is copied when either region first writes it (or the \
                clone first reads it), in whichever process. A pool with pmem shelves cannot be frozen; there \
                the bytes are copied as they are.
                """)
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The region to copy.") var region: String
        @Argument(help: "The new region's name.") var newRegion: String
        @Option(help: "Where the copy's pages live (as for `heap policy`); the pool's default otherwise.") var policy: String?

        func run() throws {
            try pool.withPool { opened in
                let copy = try opened.cloneRegion(name: region, as: newRegion, placement: try policy.map(Placement.init(parsing:)))
                print("cloned region '\(region)' as '\(copy.name)' (\(ByteSize.format(copy.size))) at \(copy.address)")
            }
        }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Destroy a region and free its pages.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The region's name.") var region: String

        func run() throws {
            try pool.withPool { opened in
                try opened.destroyRegion(name: region)
                print("destroyed region '\(region)'")
            }
        }
    }

    struct Chmod: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change who may map a region: its permission bits.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The region's name.") var region: String
        @Argument(help: "Permission bits, in octal (600, 640, …).") var mode: String

        func run() throws {
            try changeAccess(pool, region) { $0.mode = try parseMode(mode) }
        }
    }

    struct Chown: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a region's owner (and group).")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The region's name.") var region: String
        @Argument(help: "UID or UID:GID, numbers.") var owner: String

        func run() throws {
            try changeAccess(pool, region) {
                let parts = owner.split(separator: ":", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), let uid = UInt32(parts[0]), parts.count == 1 || UInt32(parts[1]) != nil else {
                    throw PoolError.invalidName(owner, reason: "an owner is UID or UID:GID, in numbers")
                }
                $0.uid = uid
                if parts.count == 2 { $0.gid = UInt32(parts[1])! }
            }
        }
    }
}

/// chmod and chown of a region: its access read, changed by `change`, kept.
func changeAccess(_ pool: PoolLocation, _ region: String, _ change: (inout RegionAccess) throws -> Void) throws {
    try pool.withPool { opened in
        var access = try opened.openRegion(name: region).access
        try change(&access)
        try opened.setRegionAccess(name: region, access)
        print("region '\(region)': mode \(String(access.mode, radix: 8)), owner \(access.uid):\(access.gid)")
    }
}

/// Octal permission bits, 0 to 7777.
func parseMode(_ text: String) throws -> UInt32 {
    guard let mode = UInt32(text, radix: 8), mode <= 0o7777 else {
        throw PoolError.invalidName(text, reason: "a mode is octal permission bits, 0 to 7777")
    }
    return mode
}
