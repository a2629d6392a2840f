import ArgumentParser
import Foundation
import PoolCore
import PoolFS
import PoolNet

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Freeze a pool's file system as a snapshot; list, delete and restore snapshots.",
        discussion: """
            A snapshot shares every file's pages with the tree it froze: it takes a copy of \
            the metadata, not of the bytes, and pages are copied only when one side writes \
            them. A mounted pool shows its snapshots read-only under \
            MOUNTPOINT/.pool/snapshots/, where mkdir makes one and rmdir drops one; these \
            commands do the same on a mounted pool (through its mount point) or on one that \
            is not mounted.
            """,
        subcommands: [Make.self, List.self, Delete.self, Restore.self],
        defaultSubcommand: Make.self)

    struct Make: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Freeze the whole tree as snapshot SNAP.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The snapshot's name.") var snapshot: String

        func run() throws {
            try withFileSystem(pool, snapshot, mounted: { mountpoint in
                try checked(mkdir("\(mountpoint)/.pool/snapshots/\(snapshot)", 0o755), pool, snapshot)
            }, unmounted: { fs in
                _ = try fs.makeSnapshot(named: FileName(snapshot))
            })
            print("made snapshot '\(snapshot)' of pool '\(pool.name)'")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a pool's snapshots.")
        @OptionGroup var pool: PoolLocation

        func run() throws {
            try withFileSystem(pool, mounted: { mountpoint in
                for name in try FileManager.default.contentsOfDirectory(atPath: "\(mountpoint)/.pool/snapshots").sorted() {
                    print(name)
                }
            }, unmounted: { fs in
                for snapshot in fs.snapshots() { print(snapshot.name) }
            })
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Drop snapshot SNAP, freeing the pages only it held.")
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The snapshot's name.") var snapshot: String

        func run() throws {
            try withFileSystem(pool, snapshot, mounted: { mountpoint in
                try checked(rmdir("\(mountpoint)/.pool/snapshots/\(snapshot)"), pool, snapshot)
            }, unmounted: { fs in
                try fs.removeSnapshot(named: FileName(snapshot))
            })
            print("deleted snapshot '\(snapshot)' of pool '\(pool.name)'")
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the file system snapshot SNAP's tree again (the snapshot stays).",
            discussion: """
                Everything the tree holds now is replaced by the snapshot's files, which share \
                its pages. The pool must not be mounted; on a mounted pool, copy files back \
                with `cp -a MOUNTPOINT/.pool/snapshots/SNAP/. MOUNTPOINT/` (whose copies share \
                pages too).
                """)
        @OptionGroup var pool: PoolLocation
        @Argument(help: "The snapshot's name.") var snapshot: String

        func run() throws {
            try withFileSystem(pool, snapshot, mounted: { mountpoint in
                throw SnapshotRefusal(message: "pool '\(pool.name)' is mounted at \(mountpoint): unmount it first, "
                    + "or copy files back with cp -a \(mountpoint)/.pool/snapshots/\(snapshot)/. \(mountpoint)/")
            }, unmounted: { fs in
                try fs.restoreSnapshot(named: FileName(snapshot))
            })
            print("restored pool '\(pool.name)' to snapshot '\(snapshot)'")
        }
    }
}

struct SnapshotRefusal: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Runs `unmounted` on the pool's file system when no mount holds the
/// pool, or `mounted` with the mount point of the mount that does.
private func withFileSystem(_ location: PoolLocation, _ snapshot: String? = nil, mounted: (String) throws -> Void,
                            unmounted: (FileSystem) throws -> Void) throws {
    try location.withPool { pool in
        do {
            try pool.holdExclusively(for: "mounted")
        } catch PoolError.heldExclusively(let name, let use, let pid) {
            guard let mountpoint = PoolfsMounts.mountpoint(of: pool) else { throw PoolError.heldExclusively(name: name, use: use, pid: pid) }
            return try mounted(mountpoint)
        }
        let fs = try FileSystem(pool: pool)
        defer { fs.unmount() }
        do {
            try unmounted(fs)
        } catch let error as FileSystemError {
            throw refusal(error.code, location, snapshot)
        }
    }
}

/// mkdir or rmdir in `.pool/snapshots/`: its errno as one line.
private func checked(_ result: Int32, _ location: PoolLocation, _ snapshot: String) throws {
    if result != 0 { throw refusal(errno, location, snapshot) }
}

private func refusal(_ code: Int32, _ location: PoolLocation, _ snapshot: String?) -> SnapshotRefusal {
    let name = snapshot.map { "snapshot '\($0)'" } ?? "snapshot"
    switch code {
    case EEXIST: return SnapshotRefusal(message: "pool '\(location.name)' already has a \(name)")
    case ENOENT: return SnapshotRefusal(message: "pool '\(location.name)' has no \(name)")
    case EINVAL, ENAMETOOLONG: return SnapshotRefusal(message: "invalid snapshot name '\(snapshot ?? "")': use a file name")
    case ENOSPC: return SnapshotRefusal(message: "pool '\(location.name)' is full: no room to record the \(name)")
    default: return SnapshotRefusal(message: "pool '\(location.name)', \(name): \(String(cString: strerror(code)))")
    }
}
