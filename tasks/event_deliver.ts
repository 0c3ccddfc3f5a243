// Delivers one (event, channel): a webhook, a Slack message or an email. Enqueued in the
// transaction that wrote the event (the events_route trigger, migrations/0009_channels.sql),
// by a test send, and by each failed attempt for the next one at its time. Runs on the
// worker's delivery runner (src/worker.ts), so a slow or dead receiver holds a delivery slot,
// never one that advances runs. See src/delivery/deliver.ts.
import * as v from 'valibot';
import type { Task } from 'graphile-worker';
import { attemptDelivery } from '../src/delivery/deliver.ts';
import { countDelivery } from '../src/observability/metrics.ts';
import type { TaskDeps } from '../src/worker.ts';

const Payload = v.object({ delivery_id: v.pipe(v.string(), v.uuid()) });

export default (deps: TaskDeps): Task => async (payload, helpers) => {
  const parsed = v.safeParse(Payload, payload);
  if (!parsed.success) {
    helpers.logger.error(`event_deliver: invalid payload ${JSON.stringify(payload)}; dropped`);
    return;
  }
  const report = await attemptDelivery(helpers.withPgClient, deps.orchestration.delivery, parsed.output.delivery_id);
  if (report.kind === 'attempted') {
    countDelivery(report.channelType, report.outcome === 'delivered' ? 'delivered'
      : report.disabledReason ? 'disabled' : report.status === 'pending' ? 'retrying' : 'failed');
  }
  if (report.kind === 'cancelled') {
    helpers.logger.info(`delivery ${parsed.output.delivery_id} cancelled: ${report.why}`);
  } else if (report.kind === 'attempted' && report.outcome !== 'delivered') {
    const meta = {
      delivery_id: parsed.output.delivery_id, channel_type: report.channelType, event: report.eventType,
      status_code: report.result.statusCode, error: report.result.error, next: report.status,
    };
    if (report.disabledReason) helpers.logger.warn(`channel disabled: ${report.disabledReason}`, meta);
    else helpers.logger.warn(`delivery failed (${report.status === 'pending' ? 'will retry' : 'no retry left'}): ${report.result.error}`, meta);
  }
};

