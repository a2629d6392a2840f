import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Snapshots through the mount and the command line: mkdir and rmdir in
/// `.pool/snapshots/`, `poolfs snapshot` mounted or not, and kill -9 while
/// snapshots come and go.
@Suite(.enabled(if: MountedPool.available, "needs root and /dev/fuse"))
struct SnapshotMountTests {

    /// What a user compares: kind, mode, owner, links, size, times, bytes, xattrs.
    private func describe(_ path: String) -> String? {
        guard let st = status(path) else { return nil }
        var line = "\(String(st.st_mode, radix: 8)) \(st.st_uid):\(st.st_gid) n\(st.st_nlink) s\(st.st_size) "
            + "m\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        if st.st_mode & S_IFMT == S_IFREG { line += " sum\((contents(path) ?? []).reduce(0) { $0 &* 31 &+ Int($1) })" }
        for name in xattrNames(path) where !name.hasPrefix("user.poolfs.") { line += " \(name)=\(xattr(path, name) ?? "")" }
        return line
    }

    @Test func mkdirFreezesTheTreeReadOnlyAndRmdirDropsIt() throws {
        let mounted = try MountedPool(size: 64 << 20)
        #expect(mkdir(mounted.path("docs"), 0o750) == 0)
        #expect(store(pattern(300_000, seed: 2), mounted.path("docs/big")))
        #expect(store(Array("small".utf8), mounted.path("small")))
        #expect(chmod(mounted.path("small"), 0o600) == 0 && chown(mounted.path("small"), 1234, 5678) == 0)
        #expect(link(mounted.path("docs/big"), mounted.path("big-too")) == 0)
        #expect(symlink("docs/big", mounted.path("to-big")) == 0)
        #expect(setxattr(mounted.path("docs/big"), "user.tag", "v", 1, 0) == 0)
        let names = ["docs", "docs/big", "small", "big-too"]
        let before = names.map { describe(mounted.path($0)) }

        #expect(mkdir(mounted.path(".pool/snapshots/s1"), 0o755) == 0)
        #expect(mounted.list(".pool/snapshots") == ["s1"])
        // The live tree moves on.
        #expect(store(Array(repeating: 7, count: 10), mounted.path("docs/big"), flags: O_WRONLY))
        #expect(unlink(mounted.path("small")) == 0)
        let frozen = { (name: String) in mounted.path(".pool/snapshots/s1/\(name)") }
        #expect(names.map { describe(frozen($0)) } == before)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: frozen("to-big"))) == "docs/big")
        #expect(status(frozen("big-too"))?.st_ino == status(frozen("docs/big"))?.st_ino)
        // Read-only, every way in.
        #expect(open(frozen("small"), O_WRONLY) == -1 && errno == EROFS)
        #expect(unlink(frozen("small")) == -1 && errno == EROFS)
        #expect(mkdir(frozen("new"), 0o755) == -1 && errno == EROFS)
        #expect(truncate(frozen("docs/big"), 0) == -1 && errno == EROFS)
        #expect(chmod(frozen("small"), 0o777) == -1 && errno == EROFS)
        // Its bytes come back with cp, whose copies share the pages, or mv,
        // which leaves the snapshot as it was; the file it makes is the
        // live tree's (writable).
        let cp = try run("/bin/cp", ["-a", frozen("small"), mounted.path("small")])
        #expect(cp.status == 0 && describe(mounted.path("small")) == before[2], "\(cp.output)")
        let mv = try run("/bin/mv", [frozen("docs/big"), mounted.path("big-back")])
        #expect(mv.status == 0, "\(mv.output)")
        #expect(contents(mounted.path("big-back")) == pattern(300_000, seed: 2))
        #expect(names.map { describe(frozen($0)) } == before)
        #expect(store(Array("live".utf8), mounted.path("big-back"), flags: O_WRONLY))
        #expect(contents(frozen("docs/big")) == pattern(300_000, seed: 2))
        #expect(unlink(mounted.path("big-back")) == 0)

        // The command line, through the mount.
        var result = try mounted.poolfs("snapshot", mounted.name, "s2")
        #expect(result.status == 0 && mounted.list(".pool/snapshots") == ["s1", "s2"], "\(result.output)")
        result = try mounted.poolfs("snapshot", mounted.name, "s2")
        #expect(result.status == 1 && result.output == "poolfs: pool 'mnt' already has a snapshot 's2'", "\(result.output)")
        result = try mounted.poolfs("snapshot", "restore", mounted.name, "s1")
        #expect(result.status == 1 && result.output.contains("is mounted at"), "\(result.output)")
        #expect(mounted.text(".pool/info")?.contains("2 snapshots alone hold") == true)
        #expect(rmdir(mounted.path(".pool/snapshots/s1")) == 0)
        #expect(rmdir(mounted.path(".pool/snapshots/s1")) == -1 && errno == ENOENT)
        #expect(status(frozen("docs/big")) == nil)

        // Not mounted: list, restore (the tree becomes s2's again), delete.
        mounted.unmount()
        result = try mounted.poolfs("snapshot", "list", mounted.name)
        #expect(result.status == 0 && result.output == "s2", "\(result.output)")
        result = try mounted.poolfs("snapshot", "restore", mounted.name, "s2")
        #expect(result.status == 0, "\(result.output)")
        result = try mounted.poolfs("snapshot", "delete", mounted.name, "nope")
        #expect(result.status == 1 && result.output == "poolfs: pool 'mnt' has no snapshot 'nope'", "\(result.output)")
        try mounted.remount()
        #expect(describe(mounted.path("docs/big")) == describe(mounted.path(".pool/snapshots/s2/docs/big")))
        #expect(contents(mounted.path("docs/big")) == Array(repeating: 7, count: 10) + pattern(300_000, seed: 2)[10...])
        #expect(status(mounted.path("small")) != nil, "s2 was made after small came back")
        #expect(rmdir(mounted.path(".pool/snapshots/s2")) == 0)
        mounted.unmount()
        let check = try mounted.poolfs("check", mounted.name)
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
    }

    /// kill -9 while a shell makes and drops snapshots of a tree: every
    /// snapshot that comes back holds the tree whole, and the pool checks
    /// clean with nothing unreferenced.
    @Test func snapshotsComeBackWholeAfterKill9() throws {
        let mounted = try MountedPool(size: 64 << 20)
        for index in 0..<20 { #expect(store(pattern(20_000 * index + 1, seed: index), mounted.path("f\(index)"))) }
        let script = """
            cd '\(mounted.mountpoint)/.pool/snapshots' || exit 1
            i=0
            while [ $i -lt 3000 ]; do
              mkdir s$i || exit 1; echo "made $i"
              if [ $i -ge 2 ]; then rmdir s$((i - 2)) || exit 1; echo "dropped $((i - 2))"; fi
              i=$((i + 1))
            done
            """
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<3 {
            let shell = try Child("/bin/sh", ["-c", script])
            let stopAfter = Int.random(in: 3...30, using: &generator)
            var lines = 0
            while lines < stopAfter, shell.readLine() != nil { lines += 1 }
            #expect(lines == stopAfter, "the shell stopped early")
            mounted.killDaemon()
            while shell.readLine() != nil {}
            shell.wait()
            try mounted.remount()
            let snapshots = mounted.list(".pool/snapshots")
            #expect(!snapshots.isEmpty)
            for snapshot in snapshots {
                for index in 0..<20 {
                    #expect(contents(mounted.path(".pool/snapshots/\(snapshot)/f\(index)")) == pattern(20_000 * index + 1, seed: index),
                            "\(snapshot)/f\(index)")
                }
            }
            for snapshot in snapshots { #expect(rmdir(mounted.path(".pool/snapshots/\(snapshot)")) == 0) }
        }
        mounted.unmount()
        let check = try mounted.poolfs("check", mounted.name)
        #expect(check.status == 0 && check.output.hasSuffix("clean"), "\(check.output)")
        #expect(check.output.contains(" 0 unreferenced"), "\(check.output)")
    }
}
