// Pipeline-parallel training, written as SageMaker model parallelism's PyTorch example reads:
// initialize, wrap the model and the optimizer, step, reduce_mean, print on rank 0.
//
//   npx cleave compile fixtures/gpt.onnx -p 2 -m 4 --dp 2 --batch 8 -o gpt.plan
//   node examples/smp_train.mjs gpt.plan
//
// Every rank runs this script (init() starts them as worker threads of this process).
import * as smp from '../dist/src/app/api/index.js';

const planFile = process.argv[2] ?? 'gpt.plan';
const steps = Number(process.argv[3] ?? 30);

await smp.init({ plan: planFile });

const model = new smp.DistributedModel();
const optimizer = new smp.DistributedOptimizer(model, { kind: 'adamw', lr: 1e-2, clip: 1.0 });
// Each data-parallel replica draws its own batches (seeded by its dp rank).
const data = model.defaultData();

for (let step = 1; step <= steps; step++) {
  const batch = data.next(model.batchSize);
  const output = await model.step(batch); // forward and backward over every microbatch
  const loss = output.reduceMean(); // mean over microbatches, as SMP's reduce_mean
  await optimizer.step();
  if (smp.rank() === 0 && (step === 1 || step % 10 === 0)) {
    console.log(`step ${step}  loss ${loss.toFixed(4)}  grad norm ${optimizer.lastGradNorm.toFixed(3)}  (rank ${smp.rank()} of ${smp.size()}: pp ${smp.ppRank()}/${smp.ppSize()}, dp ${smp.dpRank()}/${smp.dpSize()})`);
  }
}
