// The Uppy page of tests/test_e2e_uppy.py: the stock @uppy/core, @uppy/dashboard
// and @uppy/tus, set up as docs/clients.md shows, bundled by esbuild into the
// test's temporary folder. The tus endpoint is the page's ?endpoint= parameter.
// window.uppyTest.state() tells the test what Uppy knows of each file.
import Uppy from '@uppy/core'
import Dashboard from '@uppy/dashboard'
import Tus from '@uppy/tus'
import '@uppy/core/css/style.min.css'
import '@uppy/dashboard/css/style.min.css'

const endpoint = new URLSearchParams(window.location.search).get('endpoint')

const uppy = new Uppy({ autoProceed: true })
  .use(Dashboard, { inline: true, target: '#uppy', fileManagerSelectionType: 'both' })
  .use(Tus, {
    endpoint,
    // Quick retries: the test's link cuts every connection after a few
    // hundred KiB, and each retry resumes from the server's offset.
    retryDelays: [0, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000,
      1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
  })

const errors = []
uppy.on('upload-error', (file, error) => errors.push(`${file && file.name}: ${error}`))
uppy.on('error', (error) => errors.push(String(error)))

window.uppyTest = {
  uppy,
  state () {
    return {
      errors,
      files: uppy.getFiles().map((f) => ({
        name: f.name,
        relativePath: f.meta.relativePath,
        size: f.size,
        uploaded: f.progress.bytesUploaded,
        complete: !!f.progress.uploadComplete,
        error: f.error || null,
        uploadURL: f.uploadURL || null,
      })),
    }
  },
}
document.body.dataset.ready = 'yes'
