import PoolCore
import PoolNet
#if canImport(Glibc)
import Glibc
#endif

/// `poolfs check`'s questions to the nodes of a pool's remote shelves: is
/// each shelf's region reserved there, where and as large as the shelf
/// says. Every run the files name on the shelf lies in that region.
enum RemoteShelfCheck {
    /// Prints a line per remote shelf; false when a node says the region is gone or moved.
    static func run(pool: String, at home: String?) throws -> Bool {
        var consistent = true
        for (shelf, place) in try Pool.remoteShelfPlaces(name: pool, at: home) {
            let node: RemotePool
            do {
                node = try RemotePool(connectingTo: try NodeAddress(place.node), key: try NodeKey.load(from: place.keyFile))
            } catch {
                print("not checked: remote shelf \(shelf): \(error)")
                continue
            }
            defer { node.close() }
            do {
                let region = try node.openRegion(name: place.region)
                if region.address != place.address || region.size < place.bytes {
                    print("problem: remote shelf \(shelf): region '\(place.region)' on \(place.node) is \(ByteSize.format(region.size)) "
                        + "at \(region.address), the shelf needs \(ByteSize.format(place.bytes)) at \(place.address)")
                    consistent = false
                } else {
                    print("remote shelf \(shelf): region '\(place.region)' reserved on \(place.node), \(ByteSize.format(region.size))")
                }
            } catch NetError.node(_, ENOENT, _) {
                print("problem: remote shelf \(shelf): region '\(place.region)' is not reserved on \(place.node): "
                    + "the bytes of the files on it are gone")
                consistent = false
            } catch {
                print("not checked: remote shelf \(shelf): \(error)")
            }
        }
        return consistent
    }
}
