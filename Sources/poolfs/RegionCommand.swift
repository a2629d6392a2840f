import ArgumentParser
import PoolCore

struct RegionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "region",
        abstract: "Create, list and destroy regions: named runs of pages mapped as plain memory.",
        subcommands: [Create.self, List.self, Destroy.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a zero-filled region.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The region's name.") var region: String
        @Option(help: "Its size; rounded up to whole pages.") var size: String
        @Option(help: "Where its pages live (as for `heap policy`); the pool's default otherwise.") var policy: String?

        func run() throws {
            try pool.withPool { opened in
                let size = try parseSize(size)
                let placement = try policy.map(Placement.init(parsing:))
                let created = try opened.createRegion(name: region, size: size, placement: placement)
                print("created region '\(created.name)' (\(ByteSize.format(created.size))) at \(created.address)")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a pool's regions.")
        @OptionGroup var pool: PoolLocation

        func run() throws {
            try pool.withPool { opened in
                for region in opened.regions() {
                    print("\(region.name)\t\(ByteSize.format(region.size))\t\(region.address)")
                }
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
}
