// SageMaker model parallelism's PyTorch MNIST example, in TypeScript: a model built in two
// `partition` blocks, wrapped in DistributedModel, trained with step() → reduceMean() → optimizer
// step, the loss printed on rank 0. Every rank runs this script (init() starts them as worker
// threads); the model is traced and compiled on the first step, as SMP does.
//
//   npx tsc -p tsconfig.json
//   node dist/examples/mnist_smp.js manual 30   # the partition blocks: convolutions on stage 0, classifier on stage 1
//   node dist/examples/mnist_smp.js auto 30     # the same net without blocks, split by the auto partitioner
import * as smp from '../src/app/api/index.js'; // in a project of your own: import * as smp from 'cleave';
import { Net } from './mnist_model.js';
import { syntheticDigits } from './synthetic_digits.js';

const mode = process.argv[2] ?? 'manual';
const steps = Number(process.argv[3] ?? 30);
if (mode !== 'manual' && mode !== 'auto') throw new Error(`mode is manual or auto, got '${mode}'`);

// SMP's modelparallel parameters: 2 partitions × 2 data-parallel replicas = 4 ranks.
await smp.init({
  config: { partitions: 2, microbatches: 4, pipeline: 'interleaved', ddp: true, dp: 2, auto_partition: mode === 'auto', default_partition: 0 },
});

const model = new smp.DistributedModel(new Net({ manual: mode === 'manual' }), { loss: 'cross-entropy' });
const optimizer = new smp.DistributedOptimizer(model, { kind: 'adam', lr: 3e-3 });
const data = syntheticDigits(smp.dpRank());

for (let step = 1; step <= steps; step++) {
  const batch = data.next(16);
  const output = await model.step(batch); // traced and compiled on the first call; forward and backward over every microbatch
  const loss = output.reduceMean(); // the mean over microbatches, as SMP's reduce_mean
  await optimizer.step();
  if (smp.rank() === 0 && (step === 1 || step % 5 === 0)) console.log(`step ${step}  loss ${loss.toFixed(4)}`);
}

if (smp.rank() === 0) {
  // Which of the model's modules each pipeline stage runs.
  const plan = model.plan;
  for (const s of plan.stages) {
    // Node names carry the module path (`/conv1/Conv`); ops of the model's own forward have none.
    const modules = new Set(s.forward.map((i) => plan.nodes[i]!.name.split('/')).filter((p) => p.length > 2).map((p) => p[1]!));
    console.log(`stage ${s.index} (pipeline rank ${s.ppRank}): ${[...modules].join(', ')}`);
  }
}
