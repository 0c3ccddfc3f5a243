// A new asset (enqueued by InsertAsset when a pipeline of its tenant has an
// on_asset_discovery trigger): starts one run of each such pipeline whose filter matches it.
import * as v from 'valibot';
import { startDiscoveryRuns } from '../src/progression/triggers.ts';
import { transactionalTask } from '../src/worker.ts';

export default transactionalTask('asset_discovered', v.object({ asset_id: v.pipe(v.string(), v.uuid()) }), async (tx, { asset_id }) => {
  await startDiscoveryRuns(tx, asset_id);
});
