// Package volume gives instances storage with limits the kernel enforces:
// persistent volumes (one holder at a time, optionally encrypted at
// rest), emptyDirs on disk or in memory, and a cap on a container's
// writable layer (--disk). Writing past any of them fails with ENOSPC.
//
// # What the kernel here offers (measured, see bench/storage.md)
//
// Kernel 6.18 with loop, ext4, btrfs, xfs, overlayfs, tmpfs and fscrypt
// (AES-256-XTS/CTS, HKDF-SHA512) built in; no device-mapper, so no
// dm-crypt or thin pools. CONFIG_QUOTA is on but no quota format
// (CONFIG_QFMT_V2) and no CONFIG_XFS_QUOTA: an ext4 made with the quota or
// project feature refuses to mount ("The kernel was not built with
// CONFIG_QUOTA and CONFIG_QFMT_V2") and xfs has no quotas, so project
// quotas, on ext4 or xfs, cannot be had. btrfs qgroups do limit a
// subvolume, and an overlay upperdir in one, but the writer gets EDQUOT
// ("Disk quota exceeded"), not ENOSPC. What is left, and what this package
// uses, is a filesystem per limit: a sparse file, loop-attached, ext4.
//
//   - A filesystem made by mkfs.ext4 with its defaults offers the writer
//     86 MiB of a 100 MiB file (inode tables, journal, 5% root reserve,
//     ext4's reserved clusters). format sizes the file so that the free
//     space statfs reports is the size asked for, +0.6% at 16 MiB and
//     under +0.2% from 64 MiB up; a writer gets ENOSPC at 100.0-100.2% of
//     the limit (tests). The file is sparse: the host gives it ~100 KiB to
//     1 MiB at creation, and then only what is written.
//   - fscrypt v2 on such a filesystem (ext4 "encrypt" feature; the key
//     added with FS_IOC_ADD_ENCRYPTION_KEY, the policy set with
//     FS_IOC_SET_ENCRYPTION_POLICY) encrypts file contents and names: a
//     marker written into an encrypted volume is absent from its backing
//     file, present in an unencrypted control's. The key lives in the
//     filesystem's keyring, which goes when the filesystem is unmounted.
//   - A memory emptyDir is a tmpfs with size=; ENOSPC at exactly the size.
//   - The writable layers: containerd's overlay snapshotter keeps an
//     active snapshot's upperdir and workdir in <root>/snapshots/<n>/{fs,
//     work}, one directory per container. A directory of the instance's
//     disk (one sized ext4 per instance, see disk.go) bound over
//     snapshots/<n> before the container's rootfs is mounted makes the
//     overlay's writes stop with ENOSPC when the disk is full
//     (TestWritableLayerENOSPC, 200 MiB: ENOSPC at 100.04%); the disk
//     emptyDirs without a sizeLimit are directories of the same disk, so
//     the layers of all containers and those emptyDirs share the limit
//     (TestInstanceDiskShared: 100.10% of 64 MiB).
//
// # Layout under the root (normally <data-dir>/volumes)
//
//	volumes/<name>/disk.img     the volume's filesystem
//	volumes/<name>/volume.json  size, encrypted, key identifier (never the key)
//	volumes/<name>/holder.json  the claim: holder, target, read-only
//	volumes/<name>/fs           where the filesystem is mounted; fs/data is
//	                            what the holder sees (bound at its target)
//	empty/<instance>/<name>/    an emptyDir: disk.img and dir, its mount
//	empty/<instance>/.disk/     the instance's disk: disk.img, and fs with
//	                            layers/<container>/{fs,work} and empty/<name>
//	templates/scratch-<size>.img formatted images copied for emptyDirs
//
// # Using it from the agent
//
// At start, before any instance is reconciled: New(<data-dir>/volumes),
// then Cleanup(live) with live saying which instance ids still run, then
// Restore(keyFor) with keyFor fetching an encrypted volume's key from the
// control plane. A "volumes" step of an instance's start, before its
// containers are created, for each volume of the spec:
//
//   - emptyDir: EmptyDir(id, name, medium, sizeLimit) and a bind mount of
//     the returned path into each container that uses it (OCI mount,
//     type bind, options rbind,rw/ro); keep the teardown for the undo and
//     the stop step (RemoveEmptyDirs(id) does it from the records after an
//     agent restart);
//   - persistent volume: Mount(name, <instance dir>/volumes/<name>,
//     {Holder: id, ReadOnly, Key}) and the same bind into the containers;
//     ErrConflict (in use by another instance) goes to the API as 409;
//     Unmount(name, id) when the instance stops;
//   - --disk: InstanceDisk(id, size) in the volumes step, DiskEmptyDir
//     for a disk emptyDir without a sizeLimit; after the snapshotter's
//     Prepare, ContainerWritableLayer(id, container,
//     filepath.Dir(upperdir), size), upperdir taken from the options of
//     the mounts Prepare returns, and before the task (whose shim mounts
//     the rootfs) is created; its teardown after the task is deleted and
//     before the snapshot is removed (the overlay snapshotter's Remove
//     deletes the snapshot dir with os.RemoveAll, which would empty the
//     mounted filesystem and then fail on the mount point).
//
// Every loop device is attached with autoclear by containerd's mount
// package, so the kernel detaches it when its filesystem's last mount goes,
// and none outlives its mount, even if the agent is killed. Mounts do
// outlive the agent: Cleanup finds them from the records and from the loop
// devices backed by files under the root, wherever they are mounted.
package volume
