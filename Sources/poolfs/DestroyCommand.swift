import ArgumentParser
import PoolCore
import PoolNet

struct DestroyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "destroy",
        abstract: "Remove a pool and all its data; refused while a process has it open.",
        discussion: """
            A remote shelf's region is freed on its node too; where the node does not \\
            answer, the pool goes all the same and a line says how to free the region later.
            """)

    @OptionGroup var pool: PoolLocation

    func run() throws {
        try reportingErrors {
            // Read before the directory that names them goes.
            let remote = (try? Pool.remoteShelfPlaces(name: pool.name, at: pool.path)) ?? []
            try Pool.destroy(name: pool.name, at: pool.path)
            print("destroyed pool '\(pool.name)'")
            for (shelf, place) in remote { release(shelf, place) }
        }
    }

    private func release(_ shelf: Int, _ place: RemoteShelfPlace) {
        do {
            let node = try RemotePool(connectingTo: try NodeAddress(place.node), key: try NodeKey.load(from: place.keyFile))
            defer { node.close() }
            try node.destroyRegion(name: place.region)
            print("freed region '\(place.region)' of remote shelf \(shelf) on \(place.node)")
        } catch {
            FileOutput.standardError.write("poolfs: region '\(place.region)' of remote shelf \(shelf) stays reserved on \(place.node) "
                + "(\(error)); free it with: poolfs remote region \(place.node) --key-file \(place.keyFile) \(place.region) --destroy\n")
        }
    }
}
